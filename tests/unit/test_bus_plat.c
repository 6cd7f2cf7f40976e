/* Unit tests for the Linux platform layer (bus/plat/plat_linux.c, with plat_posix.c and
 * plat_common.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus_plat.h"
#include "test_util.h"

static char s_tmpdir[64]; /* this run's scratch directory */

/* Builds "<tmpdir>/<name>" into buf. */
static const char *tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", s_tmpdir, name);
    return buf;
}

/* Creates the scratch directory. */
static int group_setup(void **state)
{
    (void)state;
    return tu_tmpdir_new(s_tmpdir, sizeof s_tmpdir, "test_bus_plat");
}

/* Removes the scratch directory. */
static int group_teardown(void **state)
{
    (void)state;
    return tu_rm_rf(s_tmpdir);
}

static void test_clocks(void **state)
{
    (void)state;
    uint64_t prev = plat_mono_us();
    for (int i = 0; i < 200000; i++) {
        uint64_t now = plat_mono_us();
        assert_true(now >= prev);
        prev = now;
    }
    struct timespec sl = {0, 20 * 1000 * 1000};
    uint64_t a = plat_mono_us();
    nanosleep(&sl, NULL);
    uint64_t b = plat_mono_us();
    assert_true(b - a >= 19000);
    assert_true(b - a < 5000000);

    uint64_t wall = plat_wall_us();
    uint64_t t = (uint64_t)time(NULL) * 1000000u;
    assert_true(wall + 2000000u > t && wall < t + 2000000u);
}

static void test_random(void **state)
{
    (void)state;
    unsigned char a[32], b[32];
    assert_int_equal(plat_random(a, sizeof a), 0);
    assert_int_equal(plat_random(b, sizeof b), 0);
    assert_memory_not_equal(a, b, sizeof a);
    assert_int_equal(plat_random(a, 0), 0);

    /* Larger than one getrandom(2) call returns at once; every byte value shows up. */
    size_t n = 1 << 20;
    unsigned char *big = calloc(1, n);
    assert_non_null(big);
    assert_int_equal(plat_random(big, n), 0);
    int seen[256] = {0};
    for (size_t i = 0; i < n; i++)
        seen[big[i]]++;
    for (int v = 0; v < 256; v++)
        assert_true(seen[v] > 0);
    /* The tail is filled too, not just the first chunk. */
    int zero_tail = 1;
    for (size_t i = n - 64; i < n; i++)
        zero_tail &= big[i] == 0;
    assert_false(zero_tail);
    free(big);
}

static void test_random_below(void **state)
{
    (void)state;
    assert_int_equal(plat_random_below(1), 0);
    int hits[10] = {0};
    for (int i = 0; i < 2000; i++) {
        uint64_t r = plat_random_below(10);
        assert_true(r < 10);
        hits[r]++;
    }
    for (int v = 0; v < 10; v++)
        assert_true(hits[v] > 100); /* ~200 expected each */

    /* Where plain modulo would be most biased: with bound 3 * 2^62, r % bound puts half the
     * draws below 2^62 instead of a third. */
    uint64_t big = UINT64_C(3) << 62;
    int low = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t r = plat_random_below(big);
        assert_true(r < big);
        low += r < (UINT64_C(1) << 62);
    }
    assert_true(low > 270 && low < 420); /* ~333 expected, ~500 if biased */
    uint64_t x = plat_random_below(UINT64_MAX);
    uint64_t y = plat_random_below(UINT64_MAX);
    assert_true(x != y);
    assert_true(plat_random_below(3) < 3);
}

static void test_paths(void **state)
{
    (void)state;
    static const struct {
        const char *dir, *name, *want;
    } joins[] = {
        {"a", "b", "a/b"},           {"a/", "b", "a/b"}, {"/", "b", "/b"},
        {"a", "/b", "/b"},           {"", "b", "b"},     {"a", "", "a"},
        {"/x/y", "c/d", "/x/y/c/d"}, {".", "f", "./f"},  {"a//", "b", "a//b"},
    };
    for (size_t i = 0; i < sizeof joins / sizeof joins[0]; i++) {
        char *j = plat_path_join(joins[i].dir, joins[i].name);
        assert_non_null(j);
        assert_string_equal(j, joins[i].want);
        free(j);
    }
    assert_null(plat_path_join(NULL, "x"));

    static const struct {
        const char *path, *want;
    } dirs[] = {
        {"a/b/c", "a/b"}, {"a", "."},    {"/a", "/"},    {"/", "/"},          {"a/b/", "a"},
        {"", "."},        {"a//b", "a"}, {"//a", "/"},   {"/x/y.conf", "/x"}, {"./hub.conf", "."},
        {"a/b//", "a"},   {"///", "/"},  {"../x", ".."},
    };
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char *d = plat_dirname(dirs[i].path);
        assert_non_null(d);
        if (strcmp(d, dirs[i].want) != 0)
            fail_msg("dirname(\"%s\") = \"%s\", want \"%s\"", dirs[i].path, d, dirs[i].want);
        free(d);
    }
    assert_null(plat_dirname(NULL));

    assert_int_equal(plat_path_is_absolute("/a"), 1);
    assert_int_equal(plat_path_is_absolute("a/b"), 0);
    assert_int_equal(plat_path_is_absolute("./a"), 0);
    assert_int_equal(plat_path_is_absolute(""), 0);
    assert_int_equal(plat_path_is_absolute(NULL), 0);
}

static void test_data_dir(void **state)
{
    (void)state;
    char *old_xdg = getenv("XDG_DATA_HOME") ? strdup(getenv("XDG_DATA_HOME")) : NULL;
    char *old_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;

    setenv("XDG_DATA_HOME", "/xdg/data", 1);
    char *d = plat_default_data_dir("agent");
    assert_string_equal(d, "/xdg/data/relayhub/agent");
    free(d);
    /* A relative XDG_DATA_HOME is invalid by the spec: fall back to HOME. */
    setenv("XDG_DATA_HOME", "rel", 1);
    setenv("HOME", "/home/u", 1);
    d = plat_default_data_dir("hub");
    assert_string_equal(d, "/home/u/.local/share/relayhub/hub");
    free(d);
    unsetenv("XDG_DATA_HOME");
    d = plat_default_data_dir("hub");
    assert_string_equal(d, "/home/u/.local/share/relayhub/hub");
    free(d);
    assert_null(plat_default_data_dir("../x"));
    assert_null(plat_default_data_dir(""));
    assert_null(plat_default_data_dir(NULL));

    if (old_xdg)
        setenv("XDG_DATA_HOME", old_xdg, 1);
    if (old_home)
        setenv("HOME", old_home, 1);
    else
        unsetenv("HOME");
    free(old_xdg);
    free(old_home);
}

static void test_mkdir_private(void **state)
{
    (void)state;
    char p[PATH_MAX], q[PATH_MAX];
    mode_t old = umask(0);
    assert_int_equal(plat_mkdir_private(tmp_path(p, sizeof p, "m/a/b//c/")), 0);
    umask(old);
    assert_int_equal(tu_mode_of(tmp_path(p, sizeof p, "m")), 0700);
    assert_int_equal(tu_mode_of(tmp_path(p, sizeof p, "m/a")), 0700);
    assert_int_equal(tu_mode_of(tmp_path(p, sizeof p, "m/a/b")), 0700);
    assert_int_equal(tu_mode_of(tmp_path(p, sizeof p, "m/a/b/c")), 0700);
    /* Existing directories are fine. */
    assert_int_equal(plat_mkdir_private(tmp_path(p, sizeof p, "m/a")), 0);
    /* A file in the way. */
    assert_int_equal(plat_write_file(tmp_path(q, sizeof q, "m/file"), "x", 1, 1, 0), 0);
    assert_int_equal(plat_mkdir_private(q), -ENOTDIR);
    assert_int_equal(plat_mkdir_private(tmp_path(p, sizeof p, "m/file/sub")), -ENOTDIR);
    assert_int_equal(plat_mkdir_private(""), -EINVAL);
}

/* Number of entries in dir other than . and .. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void test_write_read(void **state)
{
    (void)state;
    char dir[PATH_MAX], p[PATH_MAX], q[PATH_MAX];
    tmp_path(dir, sizeof dir, "w");
    assert_int_equal(plat_mkdir_private(dir), 0);
    tmp_path(p, sizeof p, "w/secret.key");
    tmp_path(q, sizeof q, "w/public.conf");

    assert_int_equal(plat_write_file(p, "key-bytes", 9, 1, 1), 0);
    assert_int_equal(tu_mode_of(p), 0600);
    assert_int_equal(plat_write_file(q, "a = 1\n", 6, 0, 0), 0);
    assert_int_equal(tu_mode_of(q), 0644);

    char *out = NULL;
    size_t len = 0;
    assert_int_equal(plat_read_file(p, 9, &out, &len), 0); /* exactly the cap */
    assert_int_equal(len, 9);
    assert_memory_equal(out, "key-bytes", 10); /* NUL-terminated */
    free(out);

    /* exclusive refuses to replace, and leaves the old content. */
    assert_int_equal(plat_write_file(p, "other", 5, 1, 1), -EEXIST);
    assert_int_equal(plat_read_file(p, 100, &out, NULL), 0);
    assert_string_equal(out, "key-bytes");
    free(out);

    /* Not exclusive: replaced whole. */
    assert_int_equal(plat_write_file(q, "b = 2", 5, 0, 0), 0);
    assert_int_equal(plat_read_file(q, 100, &out, &len), 0);
    assert_int_equal(len, 5);
    assert_string_equal(out, "b = 2");
    free(out);
    /* Replacing a public file with a private one gives 0600. */
    assert_int_equal(plat_write_file(q, "c", 1, 1, 0), 0);
    assert_int_equal(tu_mode_of(q), 0600);

    /* Empty file. */
    tmp_path(q, sizeof q, "w/empty");
    assert_int_equal(plat_write_file(q, NULL, 0, 0, 1), 0);
    assert_int_equal(plat_read_file(q, 0, &out, &len), 0);
    assert_int_equal(len, 0);
    assert_string_equal(out, "");
    free(out);

    /* No temporary files are left behind, after success or failure. */
    assert_int_equal(count_entries(dir), 3);
    tmp_path(q, sizeof q, "w/nosuchdir/x");
    assert_int_equal(plat_write_file(q, "x", 1, 0, 0), -ENOENT);
    assert_int_equal(count_entries(dir), 3);

    /* Caps and errors. */
    out = (char *)"untouched";
    assert_int_equal(plat_read_file(p, 8, &out, &len), -EFBIG);
    assert_null(out);
    assert_int_equal(plat_read_file(tmp_path(q, sizeof q, "nope"), 10, &out, &len), -ENOENT);
    assert_int_equal(plat_read_file(dir, 10, &out, &len), -EISDIR);
    /* A /proc file says size 0 but has content: read to EOF, still capped. */
    assert_int_equal(plat_read_file("/proc/self/status", 1 << 20, &out, &len), 0);
    assert_true(len > 0 && strncmp(out, "Name:", 5) == 0);
    free(out);
    assert_int_equal(plat_read_file("/proc/self/status", 10, &out, &len), -EFBIG);

    /* A large file in several reads. */
    size_t n = 3 * 65536 + 17;
    char *big = malloc(n);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    tmp_path(q, sizeof q, "w/big");
    assert_int_equal(plat_write_file(q, big, n, 0, 0), 0);
    assert_int_equal(plat_read_file(q, n, &out, &len), 0);
    assert_int_equal(len, n);
    assert_memory_equal(out, big, n);
    free(out);
    assert_int_equal(plat_read_file(q, n - 1, &out, &len), -EFBIG);
    free(big);
}

static void test_write_concurrent_exclusive(void **state)
{
    (void)state;
    /* Several processes race to create one file exclusively: exactly one wins and the file
     * holds that one's content in full. */
    char dir[PATH_MAX], p[PATH_MAX];
    tmp_path(dir, sizeof dir, "race");
    assert_int_equal(plat_mkdir_private(dir), 0);
    tmp_path(p, sizeof p, "race/agent.key");
    pid_t kids[8];
    for (int i = 0; i < 8; i++) {
        kids[i] = fork();
        assert_true(kids[i] >= 0);
        if (kids[i] == 0) {
            char data[4096];
            memset(data, 'A' + i, sizeof data);
            int rc = plat_write_file(p, data, sizeof data, 1, 1);
            _exit(rc == 0 ? 0 : rc == -EEXIST ? 1 : 2);
        }
    }
    int winners = 0;
    for (int i = 0; i < 8; i++) {
        int st;
        assert_int_equal(waitpid(kids[i], &st, 0), kids[i]);
        assert_true(WIFEXITED(st));
        assert_true(WEXITSTATUS(st) <= 1);
        winners += WEXITSTATUS(st) == 0;
    }
    assert_int_equal(winners, 1);
    char *out;
    size_t len;
    assert_int_equal(plat_read_file(p, 1 << 20, &out, &len), 0);
    assert_int_equal(len, 4096);
    for (size_t i = 1; i < len; i++)
        assert_int_equal(out[i], out[0]);
    free(out);
    assert_int_equal(count_entries(dir), 1); /* the losers' temporary files are gone */
}

static void test_check_private(void **state)
{
    (void)state;
    char p[PATH_MAX];
    tmp_path(p, sizeof p, "perm");
    assert_int_equal(plat_write_file(p, "x", 1, 1, 0), 0);
    assert_int_equal(plat_check_private(p), 0);
    assert_int_equal(chmod(p, 0400), 0);
    assert_int_equal(plat_check_private(p), 0);
    assert_int_equal(chmod(p, 0644), 0);
    assert_int_equal(plat_check_private(p), -EPERM);
    assert_int_equal(chmod(p, 0640), 0);
    assert_int_equal(plat_check_private(p), -EPERM);
    assert_int_equal(chmod(p, 0602), 0);
    assert_int_equal(plat_check_private(p), -EPERM);
    assert_int_equal(plat_check_private(tmp_path(p, sizeof p, "nope")), -ENOENT);
}

/* In a child process: tries to lock path and exits with 0 (got it), 1 (EWOULDBLOCK) or 2. */
static int lock_in_child(const char *path)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int h = plat_lock_file(path);
        _exit(h >= 0 ? 0 : h == -EWOULDBLOCK ? 1 : 2);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_lock(void **state)
{
    (void)state;
    char p[PATH_MAX];
    tmp_path(p, sizeof p, "agent.lock");
    int h = plat_lock_file(p); /* created if missing */
    assert_true(h >= 0);
    assert_int_equal(tu_mode_of(p), 0600);
    assert_int_equal(lock_in_child(p), 1);
    /* A second open in this same process conflicts too. */
    assert_int_equal(plat_lock_file(p), -EWOULDBLOCK);
    /* The descriptor does not leak into exec'd children. */
    assert_true(fcntl(h, F_GETFD) & FD_CLOEXEC);
    plat_unlock(h);
    assert_int_equal(lock_in_child(p), 0);
    h = plat_lock_file(p);
    assert_true(h >= 0);
    plat_unlock(h);
    plat_unlock(-1); /* harmless */
    assert_int_equal(plat_lock_file(tmp_path(p, sizeof p, "no/such/dir.lock")), -ENOENT);
}

static void test_die_with_parent(void **state)
{
    (void)state;
    /* parent (us) -> child -> grandchild. The grandchild asks for SIGTERM on its parent's
     * death and holds the write end of a pipe; when the child exits, the grandchild must die,
     * which we see as EOF on the pipe. As a subreaper we inherit the orphan and can check that
     * SIGTERM is what killed it (and reap it). */
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    int alive[2], ready[2];
    assert_int_equal(pipe(alive), 0);
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(alive[0]);
        pid_t gc = fork();
        if (gc < 0)
            _exit(2);
        if (gc == 0) {
            close(ready[0]);
            signal(SIGTERM, SIG_DFL);
            if (plat_die_with_parent() != 0)
                _exit(3);
            pid_t me = getpid();
            if (write(alive[1], &me, sizeof me) != (ssize_t)sizeof me)
                _exit(4);
            if (write(ready[1], "r", 1) != 1)
                _exit(4);
            for (;;)
                pause();
        }
        close(alive[1]);
        close(ready[1]);
        char c;
        _exit(read(ready[0], &c, 1) == 1 ? 0 : 5);
    }
    close(alive[1]);
    close(ready[1]);
    int st;
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    pid_t gc = 0;
    assert_int_equal(read(alive[0], &gc, sizeof gc), sizeof gc);
    struct pollfd pfd = {alive[0], POLLIN, 0};
    int ready_n = poll(&pfd, 1, 5000);
    char c;
    if (ready_n != 1 || read(alive[0], &c, 1) != 0) {
        kill(gc, SIGKILL); /* do not leave it behind */
        fail_msg("the grandchild outlived its parent");
    }
    /* EOF: the grandchild is gone, killed by SIGTERM. */
    assert_int_equal(waitpid(gc, &st, 0), gc);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGTERM);
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
    close(alive[0]);
    close(ready[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clocks),          cmocka_unit_test(test_random),
        cmocka_unit_test(test_random_below),    cmocka_unit_test(test_paths),
        cmocka_unit_test(test_data_dir),        cmocka_unit_test(test_mkdir_private),
        cmocka_unit_test(test_write_read),      cmocka_unit_test(test_write_concurrent_exclusive),
        cmocka_unit_test(test_check_private),   cmocka_unit_test(test_lock),
        cmocka_unit_test(test_die_with_parent),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
