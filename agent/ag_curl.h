/* ag_curl: libcurl's multi interface inside the bus_loop (STYLE rule 8: no threads).
 *
 * curl tells us which sockets to watch through CURLMOPT_SOCKETFUNCTION and when to wake it
 * through CURLMOPT_TIMERFUNCTION. The sockets go into one epoll set (level-triggered) whose
 * descriptor is watched by the lws loop (ag_fd): when any curl socket is ready the epoll
 * descriptor polls readable, and each ready socket is handed to curl_multi_socket_action. curl's
 * timer is a bus_timer. Sockets stay curl's: nothing is dup'ed, and lws never closes them.
 * Finished transfers are reported through the done callback, outside any curl callback, so the
 * owner may remove and clean up the easy handle there.
 */
#ifndef AG_CURL_H
#define AG_CURL_H

#include <curl/curl.h>

#include "bus_loop.h"

typedef struct ag_curl ag_curl_t;

/* A transfer finished (result CURLE_OK or an error). The handle is still in the multi: the
 * callee removes it (ag_curl_remove) and cleans it up. */
typedef void (*ag_curl_done_cb)(void *arg, CURL *easy, CURLcode result);

/* Creates the multi handle (HTTP/2 multiplexing on) joined to loop. NULL on failure. */
ag_curl_t *ag_curl_new(bus_loop_t *loop, ag_curl_done_cb done, void *arg);
/* Removes nothing: the owner removes its transfers first. Accepts NULL. */
void ag_curl_destroy(ag_curl_t **c);

/* The multi handle, for options. */
CURLM *ag_curl_multi(ag_curl_t *c);
/* Starts a transfer. 0 or -EIO. */
int ag_curl_add(ag_curl_t *c, CURL *easy);
/* Stops a transfer at once (its connection is closed if the transfer was mid-way). Must not be
 * called from inside one of that transfer's curl callbacks. */
void ag_curl_remove(ag_curl_t *c, CURL *easy);
/* Kicks curl after curl_easy_pause() from outside its callbacks (runs due work soon). */
void ag_curl_kick(ag_curl_t *c);

#endif
