/* ag_spawn: starts a child of `agent run` (see ag_spawn.h). */
#include "ag_spawn.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>

extern char **environ;

pid_t ag_spawn(const char *exe, const char *config, char *const *sets, size_t n_sets,
               const char *const *extra)
{
    size_t n_extra = 0;
    while (extra && extra[n_extra])
        n_extra++;
    size_t argc = 0;
    char **argv = calloc(4 + 2 * n_sets + n_extra + 1, sizeof *argv);
    if (!argv)
        return -ENOMEM;
    argv[argc++] = (char *)exe;
    argv[argc++] = "--config";
    argv[argc++] = (char *)config;
    for (size_t i = 0; i < n_sets; i++) {
        argv[argc++] = "--set";
        argv[argc++] = sets[i];
    }
    for (size_t i = 0; i < n_extra; i++)
        argv[argc++] = (char *)extra[i];
    argv[argc] = NULL;

    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&fa);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
    pid_t pid = 0;
    int rc = posix_spawn(&pid, exe, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    free(argv);
    return rc != 0 ? -rc : pid;
}
