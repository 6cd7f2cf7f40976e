/* ag_spawn: starts one of `agent run`'s children (agent-adapter, agent-ledger).
 *
 * The child gets `EXE --config FILE [--set S]... [EXTRA...]`, an empty signal mask (the loop
 * blocks SIGTERM/INT/HUP in `agent run`) and none of the parent's descriptors beyond 0-2 (the
 * tunnel's socket, lws's). It dies with its parent on its own (PR_SET_PDEATHSIG and a parent
 * pid check, given --parent).
 */
#ifndef AG_SPAWN_H
#define AG_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

/* Starts exe. extra: further arguments, NULL-terminated (may be NULL). Returns the child's pid,
 * or a negative errno. */
pid_t ag_spawn(const char *exe, const char *config, char *const *sets, size_t n_sets,
               const char *const *extra);

#endif
