/* ag_fd: raw descriptors adopted into the lws loop. */
#include "ag_fd.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_PROTO_NAME "ag-fd"

struct ag_fd {
    struct lws *wsi; /* the adopted descriptor, NULL once lws closed it */
    ag_fd_cb cb;     /* readable handler */
    void *arg;       /* its context */
    int fd;          /* the descriptor */
    bool closing;    /* destroy called: the close callback frees */
};

/* lws callback of the ag-fd protocol: readable and closed events of adopted descriptors. */
static int s_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
    ag_fd_t *w = lws_get_opaque_user_data(wsi);
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (w && !w->closing)
            w->cb(w->arg, w->fd);
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (w) {
            /* Whoever comes second frees: the owner's destroy or this close. */
            lws_set_opaque_user_data(wsi, NULL);
            w->wsi = NULL;
            if (w->closing)
                free(w);
        }
        return 0;
    default:
        return 0;
    }
}

struct lws_protocols ag_fd_protocol(void)
{
    struct lws_protocols p;
    memset(&p, 0, sizeof p);
    p.name = S_PROTO_NAME;
    p.callback = s_callback;
    return p;
}

ag_fd_t *ag_fd_new(bus_loop_t *loop, int fd, ag_fd_cb cb, void *arg)
{
    ag_fd_t *w = calloc(1, sizeof *w);
    if (!w) {
        close(fd);
        return NULL;
    }
    w->cb = cb;
    w->arg = arg;
    w->fd = fd;
    lws_sock_file_fd_type u;
    memset(&u, 0, sizeof u);
    u.filefd = (lws_filefd_type)fd;
    w->wsi = lws_adopt_descriptor_vhost(bus_loop_client_vhost(loop), LWS_ADOPT_RAW_FILE_DESC, u,
                                        S_PROTO_NAME, NULL);
    if (!w->wsi) {
        close(fd);
        free(w);
        return NULL;
    }
    lws_set_opaque_user_data(w->wsi, w);
    return w;
}

void ag_fd_destroy(ag_fd_t **p)
{
    if (!p || !*p)
        return;
    ag_fd_t *w = *p;
    *p = NULL;
    w->closing = true;
    if (!w->wsi) {
        free(w); /* lws already closed the descriptor (context destroyed) */
        return;
    }
    lws_set_timeout(w->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
}
