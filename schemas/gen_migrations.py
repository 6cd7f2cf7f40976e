#!/usr/bin/env python3
"""gen_migrations: compiles the SQL migrations into a C file for lib/store.

Usage:
    gen_migrations.py OUTPUT.c --sqlite SRC... --mysql SRC... [--depfile FILE]

Each SRC is a migration file named NNN_name.sql (NNN: its version, >= 1) or a directory whose
*.sql files are all taken. Both backends must define the same versions. A file's statements
end with a ';' that is the last character of a line; lines that start with '--' (after
blanks) are comments and are dropped. Anything else about the SQL is left to the database.

OUTPUT.c defines, with the types of lib/store/store_impl.h:
    const store_migration_t store_migrations_sqlite[];  const size_t store_migrations_sqlite_count;
    const store_migration_t store_migrations_mysql[];   const size_t store_migrations_mysql_count;
--depfile writes a Makefile-style dependency file listing every .sql file read (for meson's
custom_target depfile:). Exit status 0 on success, 1 with a message naming file and line on
any problem, 2 on bad usage. Python 3 standard library only.
"""

import os
import re
import sys

NAME_RE = re.compile(r"^(\d+)_([A-Za-z0-9_]+)\.sql$")


class GenError(Exception):
    """A problem with an input file, reported as 'gen_migrations: MESSAGE'."""


def split_statements(path, text):
    """Splits a migration's text into statements (without their final ';')."""
    stmts = []
    cur = []
    start = 0
    for lineno, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if not cur and (not stripped or stripped.startswith("--")):
            continue
        if stripped.startswith("--"):
            continue
        if not cur:
            start = lineno
        body = line.rstrip()
        if body.endswith(";"):
            cur.append(body[:-1].rstrip())
            stmt = "\n".join(cur).strip()
            if not stmt:
                raise GenError(f"{path}:{lineno}: empty statement")
            stmts.append(stmt)
            cur = []
        else:
            cur.append(body)
    if cur:
        raise GenError(f"{path}:{start}: statement does not end with ';' at the end of a line")
    if not stmts:
        raise GenError(f"{path}: no statements")
    return stmts


def c_string(text):
    """Renders text as C string literal pieces, one per source line, escaped byte by byte."""
    pieces = []
    for line in text.split("\n"):
        out = []
        for b in line.encode("utf-8"):
            c = chr(b)
            if c in '"\\?':  # '?' too: C11 trigraphs
                out.append("\\" + c)
            elif 0x20 <= b < 0x7F:
                out.append(c)
            elif c == "\t":
                out.append("\\t")
            else:
                out.append(f"\\{b:03o}")
        pieces.append('"' + "".join(out))
    return "\\n\"\n        ".join(pieces) + '"'


def collect(sources):
    """Expands files and directories into a version-sorted list of (version, name, path)."""
    paths = []
    for src in sources:
        if os.path.isdir(src):
            paths.extend(
                os.path.join(src, f) for f in sorted(os.listdir(src)) if f.endswith(".sql")
            )
        elif os.path.isfile(src):
            paths.append(src)
        else:
            raise GenError(f"{src}: no such file or directory")
    found = {}
    for path in paths:
        m = NAME_RE.match(os.path.basename(path))
        if not m:
            raise GenError(f"{path}: name must be NNN_name.sql (NNN the version)")
        version = int(m.group(1))
        if version < 1:
            raise GenError(f"{path}: version must be >= 1")
        if version in found and os.path.realpath(found[version][1]) != os.path.realpath(path):
            raise GenError(f"{path}: version {version} also in {found[version][1]}")
        found[version] = (os.path.basename(path)[:-4], path)
    if not found:
        raise GenError("no migration files given for one backend")
    return [(v, found[v][0], found[v][1]) for v in sorted(found)]


def read_migration(path):
    """Reads one migration file as UTF-8 and returns its statements."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise GenError(f"{path}: {e.strerror}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GenError(f"{path}: not UTF-8 (byte {e.start})") from e
    return split_statements(path, text.replace("\r\n", "\n"))


def render(backends):
    """Returns the text of the C file for {backend: [(version, name, path, stmts)]}."""
    out = [
        "/* migrations.c: generated — edit schemas/sql/, not this file.",
        " * Written by schemas/gen_migrations.py from:",
    ]
    for backend, migs in backends.items():
        for _, _, path, _ in migs:
            out.append(f" *   {backend}: {os.path.basename(os.path.dirname(path))}/"
                       f"{os.path.basename(path)}")
    out += [" */", '#include "store_impl.h"', ""]
    for backend, migs in backends.items():
        for version, name, _, stmts in migs:
            out.append(f"static const char *const s_{backend}_{version:03d}[] = {{")
            for stmt in stmts:
                out.append("    " + c_string(stmt).replace("\n        ", "\n    ") + ",")
            out += ["};", ""]
        out.append(f"const store_migration_t store_migrations_{backend}[] = {{")
        for version, name, _, stmts in migs:
            out.append(f'    {{{version}, "{name}", s_{backend}_{version:03d}, {len(stmts)}}},')
        out += [
            "};",
            f"const size_t store_migrations_{backend}_count =",
            f"    sizeof(store_migrations_{backend}) / sizeof(store_migrations_{backend}[0]);",
            "",
        ]
    return "\n".join(out)


def parse_args(argv):
    """Parses the command line into (output, {backend: [sources]}, depfile)."""
    if len(argv) < 2 or argv[1].startswith("-"):
        raise SystemExit(2)
    output = argv[1]
    sources = {"sqlite": [], "mysql": []}
    depfile = None
    current = None
    args = iter(argv[2:])
    for arg in args:
        if arg in ("--sqlite", "--mysql"):
            current = arg[2:]
        elif arg == "--depfile":
            depfile = next(args, None)
            if depfile is None:
                raise SystemExit(2)
        elif arg.startswith("-") or current is None:
            raise SystemExit(2)
        else:
            sources[current].append(arg)
    return output, sources, depfile


def main(argv):
    """Entry point: returns the exit status."""
    try:
        output, sources, depfile = parse_args(argv)
    except SystemExit:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    try:
        backends = {}
        for backend in ("sqlite", "mysql"):
            if not sources[backend]:
                raise GenError(f"no --{backend} sources")
            backends[backend] = [
                (v, name, path, read_migration(path)) for v, name, path in collect(sources[backend])
            ]
        versions = {b: [m[0] for m in migs] for b, migs in backends.items()}
        if versions["sqlite"] != versions["mysql"]:
            raise GenError(
                f"sqlite has versions {versions['sqlite']}, mysql {versions['mysql']}: "
                "every migration needs both"
            )
        text = render(backends)
        tmp = output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, output)
        if depfile:
            deps = [m[2] for migs in backends.values() for m in migs]
            with open(depfile, "w", encoding="utf-8") as f:
                f.write(output.replace(" ", "\\ ") + ": " +
                        " ".join(d.replace(" ", "\\ ") for d in deps) + "\n")
    except (GenError, OSError) as e:
        print(f"gen_migrations: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
