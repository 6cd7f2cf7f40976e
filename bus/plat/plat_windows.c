/* plat_windows: the platform layer on Windows (see bus_plat.h), less what plat_common.c
 * shares with every OS (path handling, plat_random_below, the bounded read loop). Not built on
 * the Linux machines. Paths are UTF-8 in the API and UTF-16 towards Windows. Links with bcrypt,
 * advapi32, shell32 and ole32.
 *
 * "Owner only" on Windows is an ACL, not mode bits: private files and directories get a
 * protected DACL that grants full access to the current user and SYSTEM and nobody else. */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#include <aclapi.h>
#include <bcrypt.h>
#include <io.h>
#include <knownfolders.h>
#include <sddl.h>
#include <shlobj.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "bus_plat.h"
#include "plat_internal.h"

#ifndef BCRYPT_SUCCESS
#define BCRYPT_SUCCESS(status) (((NTSTATUS)(status)) >= 0)
#endif

/* Maps a Win32 error code to a negative errno. */
static int s_errno_from(DWORD e)
{
    switch (e) {
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_DRIVE:
        return -ENOENT;
    case ERROR_ACCESS_DENIED:
    case ERROR_WRITE_PROTECT:
        return -EACCES;
    case ERROR_ALREADY_EXISTS:
    case ERROR_FILE_EXISTS:
        return -EEXIST;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
        return -ENOMEM;
    case ERROR_LOCK_VIOLATION:
        return -EWOULDBLOCK;
    case ERROR_SHARING_VIOLATION:
        return -EBUSY;
    case ERROR_DISK_FULL:
    case ERROR_HANDLE_DISK_FULL:
        return -ENOSPC;
    case ERROR_INVALID_NAME:
    case ERROR_INVALID_PARAMETER:
    case ERROR_BAD_PATHNAME:
        return -EINVAL;
    case ERROR_FILENAME_EXCED_RANGE:
        return -ENAMETOOLONG;
    case ERROR_DIRECTORY:
        return -ENOTDIR;
    default:
        return -EIO;
    }
}

/* The last Win32 error as a negative errno. */
static int s_last_errno(void)
{
    return s_errno_from(GetLastError());
}

uint64_t plat_mono_us(void)
{
    /* QueryPerformanceCounter never fails on XP and later and is monotonic across cores; the
     * frequency is fixed at boot and cheap to ask for, so no cached global. */
    LARGE_INTEGER freq, now;
    QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&now);
    uint64_t c = (uint64_t)now.QuadPart;
    uint64_t f = (uint64_t)freq.QuadPart;
    /* Split the division so c * 1e6 cannot overflow. */
    return (c / f) * 1000000u + (c % f) * 1000000u / f;
}

uint64_t plat_wall_us(void)
{
    FILETIME ft;
    GetSystemTimePreciseAsFileTime(&ft);
    uint64_t t = ((uint64_t)ft.dwHighDateTime << 32) | ft.dwLowDateTime;
    /* 100 ns ticks since 1601-01-01 to microseconds since 1970-01-01. */
    return (t - UINT64_C(116444736000000000)) / 10u;
}

int plat_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ULONG chunk = n > 0x40000000u ? 0x40000000u : (ULONG)n;
        NTSTATUS st = BCryptGenRandom(NULL, p, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG);
        if (!BCRYPT_SUCCESS(st))
            return -EIO;
        p += chunk;
        n -= chunk;
    }
    return 0;
}

/* UTF-8 to a malloc'd UTF-16 string, or NULL. */
static wchar_t *s_widen(const char *s)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0)
        return NULL;
    wchar_t *w = malloc((size_t)n * sizeof *w);
    if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n) != n) {
        free(w);
        return NULL;
    }
    return w;
}

/* UTF-16 to a malloc'd UTF-8 string, or NULL. */
static char *s_narrow(const wchar_t *w)
{
    int n = WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, w, -1, NULL, 0, NULL, NULL);
    if (n <= 0)
        return NULL;
    char *s = malloc((size_t)n);
    if (s && WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, w, -1, s, n, NULL, NULL) != n) {
        free(s);
        return NULL;
    }
    return s;
}

char *plat_default_data_dir(const char *component)
{
    if (!plat_component_ok(component)) {
        errno = EINVAL;
        return NULL;
    }
    char *base = NULL;
    wchar_t env[MAX_PATH + 1];
    DWORD n = GetEnvironmentVariableW(L"LOCALAPPDATA", env, MAX_PATH + 1);
    if (n > 0 && n <= MAX_PATH) {
        base = s_narrow(env);
    } else {
        /* No usable %LOCALAPPDATA% (services, odd environments): ask the shell. */
        PWSTR known = NULL;
        if (SUCCEEDED(SHGetKnownFolderPath(&FOLDERID_LocalAppData, 0, NULL, &known)))
            base = s_narrow(known);
        CoTaskMemFree(known);
    }
    if (!base) {
        errno = ENOENT;
        return NULL;
    }
    size_t bl = strlen(base);
    char *out =
        plat_concat(base, bl && plat_is_sep(base[bl - 1]) ? "" : "\\", "relayhub\\", component);
    free(base);
    return out;
}

/* The current user's SID as an SDDL string, LocalFree'd by the caller, or NULL. */
static wchar_t *s_user_sid_string(void)
{
    HANDLE tok = NULL;
    wchar_t *str = NULL;
    if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &tok))
        return NULL;
    DWORD need = 0;
    GetTokenInformation(tok, TokenUser, NULL, 0, &need);
    TOKEN_USER *tu = need ? malloc(need) : NULL;
    if (tu && GetTokenInformation(tok, TokenUser, tu, need, &need))
        ConvertSidToStringSidW(tu->User.Sid, &str);
    free(tu);
    CloseHandle(tok);
    return str;
}

/* Fills sa with a protected DACL: full access for the current user and SYSTEM only,
 * inherited by children. Free sa->lpSecurityDescriptor with LocalFree. 0 or a negative errno. */
static int s_private_sa(SECURITY_ATTRIBUTES *sa)
{
    wchar_t *sid = s_user_sid_string();
    if (!sid)
        return s_last_errno();
    wchar_t sddl[256];
    /* D:P protects the DACL from inheriting the parent's entries; OICI passes ours down. */
    int n =
        swprintf(sddl, sizeof sddl / sizeof sddl[0], L"D:P(A;OICI;FA;;;%ls)(A;OICI;FA;;;SY)", sid);
    LocalFree(sid);
    if (n < 0)
        return -ENAMETOOLONG;
    memset(sa, 0, sizeof *sa);
    sa->nLength = sizeof *sa;
    sa->bInheritHandle = FALSE;
    if (!ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl, SDDL_REVISION_1,
                                                              &sa->lpSecurityDescriptor, NULL))
        return s_last_errno();
    return 0;
}

/* Creates one directory with the SECURITY_ATTRIBUTES sa points to; an existing directory is
 * fine. 0 or a negative errno. */
static int s_mkdir_one(const char *dir, void *sa)
{
    wchar_t *w = s_widen(dir);
    if (!w)
        return -EINVAL;
    int rc = 0;
    if (!CreateDirectoryW(w, sa)) {
        DWORD e = GetLastError();
        if (e == ERROR_ALREADY_EXISTS) {
            DWORD attr = GetFileAttributesW(w);
            rc = (attr != INVALID_FILE_ATTRIBUTES && (attr & FILE_ATTRIBUTE_DIRECTORY)) ? 0
                                                                                        : -ENOTDIR;
        } else {
            rc = s_errno_from(e);
        }
    }
    free(w);
    return rc;
}

int plat_mkdir_private(const char *dir)
{
    if (!dir || !*dir)
        return -EINVAL;
    SECURITY_ATTRIBUTES sa;
    int rc = s_private_sa(&sa);
    if (rc < 0)
        return rc;
    /* Create each prefix past the root (drive or UNC share) that ends before a separator. */
    rc = plat_walk_prefixes(dir, s_mkdir_one, &sa);
    LocalFree(sa.lpSecurityDescriptor);
    return rc;
}

/* Writes all of data to h and flushes it to disk. 0 or a negative errno. */
static int s_write_all(HANDLE h, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        DWORD chunk = len > 0x40000000u ? 0x40000000u : (DWORD)len;
        DWORD done = 0;
        if (!WriteFile(h, p, chunk, &done, NULL))
            return s_last_errno();
        p += done;
        len -= done;
    }
    return FlushFileBuffers(h) ? 0 : s_last_errno();
}

int plat_write_file(const char *path, const void *data, size_t len, int private_file, int exclusive)
{
    if (!path || !*path || (!data && len))
        return -EINVAL;
    unsigned char rnd[8];
    char suffix[32];
    int rc = plat_random(rnd, sizeof rnd);
    if (rc < 0)
        return rc;
    snprintf(suffix, sizeof suffix, ".tmp.%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    char *tmp = plat_concat(path, suffix, NULL, NULL);
    wchar_t *wtmp = tmp ? s_widen(tmp) : NULL;
    wchar_t *wpath = s_widen(path);
    SECURITY_ATTRIBUTES sa;
    int have_sa = 0;
    if (!tmp || !wtmp || !wpath) {
        rc = -ENOMEM;
        goto out;
    }
    /* A non-private file simply inherits its directory's ACL (the 0644 of Windows). */
    if (private_file) {
        rc = s_private_sa(&sa);
        if (rc < 0)
            goto out;
        have_sa = 1;
    }
    /* CREATE_NEW is O_EXCL: a file planted under the temporary name is never opened. */
    HANDLE h = CreateFileW(wtmp, GENERIC_WRITE, 0, have_sa ? &sa : NULL, CREATE_NEW,
                           FILE_ATTRIBUTE_NORMAL, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        rc = s_last_errno();
        goto out;
    }
    rc = s_write_all(h, data, len);
    if (!CloseHandle(h) && rc == 0)
        rc = s_last_errno();
    /* Without MOVEFILE_REPLACE_EXISTING the move fails with ERROR_ALREADY_EXISTS if path
     * exists, checked and done in one step by the filesystem. A replaced target held open by
     * another process without FILE_SHARE_DELETE makes the move fail with EACCES. */
    if (rc == 0 &&
        !MoveFileExW(wtmp, wpath,
                     (exclusive ? 0 : MOVEFILE_REPLACE_EXISTING) | MOVEFILE_WRITE_THROUGH))
        rc = s_last_errno();
    if (rc < 0)
        DeleteFileW(wtmp);
out:
    if (have_sa)
        LocalFree(sa.lpSecurityDescriptor);
    free(wpath);
    free(wtmp);
    free(tmp);
    return rc;
}

/* plat_read_fn over a Win32 file handle (src is the HANDLE). */
static int s_read_handle(void *src, char *buf, size_t want, size_t *got)
{
    DWORD n = 0;
    if (!ReadFile((HANDLE)src, buf, want > 0x40000000u ? 0x40000000u : (DWORD)want, &n, NULL))
        return s_last_errno();
    *got = n;
    return 0;
}

int plat_read_file(const char *path, size_t max, char **out, size_t *out_len)
{
    if (!path || !out || max >= SIZE_MAX - 1)
        return -EINVAL;
    *out = NULL;
    if (out_len)
        *out_len = 0;
    wchar_t *w = s_widen(path);
    if (!w)
        return -EINVAL;
    DWORD attr = GetFileAttributesW(w);
    if (attr != INVALID_FILE_ATTRIBUTES && (attr & FILE_ATTRIBUTE_DIRECTORY)) {
        free(w);
        return -EISDIR;
    }
    HANDLE h = CreateFileW(w, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                           NULL, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    free(w);
    if (h == INVALID_HANDLE_VALUE)
        return s_last_errno();
    /* The size is a hint; 0 (unknown) when the OS does not give it. */
    LARGE_INTEGER size;
    size.QuadPart = 0;
    uint64_t hint = GetFileSizeEx(h, &size) && size.QuadPart > 0 ? (uint64_t)size.QuadPart : 0;
    int rc = plat_read_capped(s_read_handle, h, hint, max, out, out_len);
    CloseHandle(h);
    return rc;
}

/* 1 if sid may hold access to a private file: the user, SYSTEM or the administrators. */
static int s_trusted_sid(PSID sid, PSID user)
{
    return EqualSid(sid, user) || IsWellKnownSid(sid, WinLocalSystemSid) ||
           IsWellKnownSid(sid, WinBuiltinAdministratorsSid);
}

int plat_check_private(const char *path)
{
    if (!path)
        return -EINVAL;
    wchar_t *w = s_widen(path);
    if (!w)
        return -EINVAL;
    PSID owner = NULL;
    PACL dacl = NULL;
    PSECURITY_DESCRIPTOR sd = NULL;
    DWORD e = GetNamedSecurityInfoW(w, SE_FILE_OBJECT,
                                    OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION, &owner,
                                    NULL, &dacl, NULL, &sd);
    free(w);
    if (e != ERROR_SUCCESS)
        return s_errno_from(e);

    int rc = 0;
    PSID user = NULL;
    wchar_t *user_str = s_user_sid_string();
    if (!user_str || !ConvertStringSidToSidW(user_str, &user)) {
        rc = -EIO;
        goto out;
    }
    if (!s_trusted_sid(owner, user)) {
        rc = -EPERM;
        goto out;
    }
    /* A NULL DACL grants everyone everything. */
    if (!dacl) {
        rc = -EPERM;
        goto out;
    }
    for (DWORD i = 0; i < dacl->AceCount && rc == 0; i++) {
        ACE_HEADER *ace = NULL;
        if (!GetAce(dacl, i, (void **)&ace)) {
            rc = -EIO;
            break;
        }
        if (ace->AceType != ACCESS_ALLOWED_ACE_TYPE || (ace->AceFlags & INHERIT_ONLY_ACE))
            continue;
        PSID sid = (PSID) & ((ACCESS_ALLOWED_ACE *)ace)->SidStart;
        if (!s_trusted_sid(sid, user) && !EqualSid(sid, owner))
            rc = -EPERM;
    }
out:
    if (user)
        LocalFree(user);
    if (user_str)
        LocalFree(user_str);
    LocalFree(sd);
    return rc;
}

int plat_lock_file(const char *path)
{
    if (!path)
        return -EINVAL;
    wchar_t *w = s_widen(path);
    if (!w)
        return -EINVAL;
    SECURITY_ATTRIBUTES sa;
    int rc = s_private_sa(&sa); /* bInheritHandle FALSE: children never hold the lock */
    if (rc < 0) {
        free(w);
        return rc;
    }
    HANDLE h = CreateFileW(w, GENERIC_READ | GENERIC_WRITE,
                           FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, &sa, OPEN_ALWAYS,
                           FILE_ATTRIBUTE_NORMAL, NULL);
    free(w);
    LocalFree(sa.lpSecurityDescriptor);
    if (h == INVALID_HANDLE_VALUE)
        return s_last_errno();
    OVERLAPPED ov;
    memset(&ov, 0, sizeof ov);
    /* The whole file range; the kernel drops the lock when the handle closes or the process
     * dies. */
    if (!LockFileEx(h, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, MAXDWORD, MAXDWORD,
                    &ov)) {
        DWORD e = GetLastError();
        CloseHandle(h);
        return e == ERROR_LOCK_VIOLATION || e == ERROR_IO_PENDING ? -EWOULDBLOCK : s_errno_from(e);
    }
    /* Hand out a CRT descriptor so the handle fits the int of the API; the CRT owns h now. */
    int fd = _open_osfhandle((intptr_t)h, _O_RDWR | _O_NOINHERIT);
    if (fd < 0) {
        UnlockFileEx(h, 0, MAXDWORD, MAXDWORD, &ov);
        CloseHandle(h);
        return -EMFILE;
    }
    return fd;
}

void plat_unlock(int handle)
{
    if (handle < 0)
        return;
    HANDLE h = (HANDLE)_get_osfhandle(handle);
    if (h != INVALID_HANDLE_VALUE) {
        OVERLAPPED ov;
        memset(&ov, 0, sizeof ov);
        UnlockFileEx(h, 0, MAXDWORD, MAXDWORD, &ov);
    }
    _close(handle); /* closes h too */
}

int plat_die_with_parent(void)
{
    /* Windows has no parent-death signal and a child cannot arrange one itself. The supervisor
     * instead creates a Job object with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, starts each child
     * CREATE_SUSPENDED, assigns it with AssignProcessToJobObject and resumes it: when the
     * supervisor dies for any reason its job handle closes and the kernel kills every child.
     * Children also watch their stdin pipe, as on macOS. Nothing to do here. */
    return 0;
}
