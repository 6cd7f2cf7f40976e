/* bench_echo_client: drives POST /admin/agents/{id}/messages round trips and prints figures.
 *
 * usage: bench_echo_client HOST PORT TOKEN SECONDS ID... 
 * One thread per agent id, each with one keep-alive HTTP/1.1 connection sending requests back
 * to back (admin → hub-tunnel → WSS → agent → back). Prints requests/s and p50/p99/max latency.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const char *host;   /* admin API address */
    int port;           /* admin API port */
    const char *token;  /* admin token */
    const char *id;     /* agent id this thread talks to */
    double seconds;     /* run time */
    uint64_t *lat_ns;   /* latencies */
    size_t n, cap;      /* count and capacity */
    int errors;         /* non-200 answers or I/O errors */
} s_worker_t;

static uint64_t s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int s_connect(const char *host, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &sa.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads one HTTP response (headers + Content-Length body); returns the status or -1. */
static int s_read_response(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        char *cl = strcasestr(buf, "content-length:");
        size_t body = cl ? strtoul(cl + 15, NULL, 10) : 0;
        size_t need = (size_t)(end + 4 - buf) + body;
        while (len < need) {
            n = read(fd, buf + len, cap - len - 1);
            if (n <= 0)
                return -1;
            len += (size_t)n;
        }
        return atoi(buf + 9);
    }
}

static void *s_run(void *arg)
{
    s_worker_t *w = arg;
    char req[1024], buf[65536];
    const char *body = "{\"text\":\"ping\"}";
    int rl = snprintf(req, sizeof req,
                      "POST /admin/agents/%s/messages HTTP/1.1\r\nHost: %s\r\n"
                      "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n%s",
                      w->id, w->host, w->token, strlen(body), body);
    int fd = s_connect(w->host, w->port);
    uint64_t end = s_now_ns() + (uint64_t)(w->seconds * 1e9);
    while (fd >= 0 && s_now_ns() < end) {
        uint64_t t0 = s_now_ns();
        if (write(fd, req, (size_t)rl) != rl) {
            w->errors++;
            break;
        }
        int st = s_read_response(fd, buf, sizeof buf);
        uint64_t t1 = s_now_ns();
        if (st != 200) {
            w->errors++;
            if (st < 0)
                break;
            continue;
        }
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->lat_ns = realloc(w->lat_ns, w->cap * sizeof *w->lat_ns);
        }
        w->lat_ns[w->n++] = t1 - t0;
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int s_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: bench_echo_client HOST PORT TOKEN SECONDS ID...\n");
        return 2;
    }
    int nw = argc - 5;
    s_worker_t *w = calloc((size_t)nw, sizeof *w);
    pthread_t *th = calloc((size_t)nw, sizeof *th);
    for (int i = 0; i < nw; i++) {
        w[i] = (s_worker_t){argv[1], atoi(argv[2]), argv[3], argv[5 + i], atof(argv[4]), NULL, 0, 0, 0};
        pthread_create(&th[i], NULL, s_run, &w[i]);
    }
    size_t total = 0;
    int errors = 0;
    for (int i = 0; i < nw; i++) {
        pthread_join(th[i], NULL);
        total += w[i].n;
        errors += w[i].errors;
    }
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < nw; i++) {
        memcpy(all + k, w[i].lat_ns, w[i].n * sizeof *all);
        k += w[i].n;
        free(w[i].lat_ns);
    }
    qsort(all, total, sizeof *all, s_cmp);
    double secs = atof(argv[4]);
    if (total)
        printf("agents=%d connections=%d requests=%zu errors=%d rps=%.0f p50_us=%.0f "
               "p99_us=%.0f max_us=%.0f\n",
               nw, nw, total, errors, (double)total / secs, all[total / 2] / 1e3,
               all[(size_t)((double)total * 0.99)] / 1e3, all[total - 1] / 1e3);
    else
        printf("agents=%d requests=0 errors=%d\n", nw, errors);
    free(all);
    free(w);
    free(th);
    return errors ? 1 : 0;
}
