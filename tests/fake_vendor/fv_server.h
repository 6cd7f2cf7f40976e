/* fv_server: the fake vendor's HTTPS API port and its plain-HTTP control port.
 *
 * Both ports are libwebsockets raw-socket vhosts (TLS on the API port): lws accepts, does TLS
 * and calls back when bytes arrive or the socket is writable; fv_http parses the requests.
 * Responses are queued one piece at a time and written from the writable callback: a stream
 * produces its next event only when the previous one has been handed to the socket, so a
 * client that stops reading stops the stream instead of growing a buffer.
 */
#ifndef FV_SERVER_H
#define FV_SERVER_H

#include "bus_loop.h"

typedef struct {
    const char *listen;     /* API port, "HOST:PORT" */
    const char *cert;       /* PEM certificate chain (NULL with key NULL: plain HTTP) */
    const char *key;        /* PEM private key */
    const char *control;    /* control port, "HOST:PORT" */
    const char *openai_key; /* the only accepted OpenAI key */
    const char *azure_key;  /* the only accepted Azure key */
} fv_opts_t;

typedef struct fv_server fv_server_t;

/* Creates the server and its two listening vhosts on loop. NULL on failure (logged). */
fv_server_t *fv_server_new(bus_loop_t *loop, const fv_opts_t *opts);

/* Frees the server; call after bus_loop_close_lws() (connections hold pointers to it). */
void fv_server_destroy(fv_server_t **p);

#endif
