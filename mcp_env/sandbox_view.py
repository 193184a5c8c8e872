"""The filesystem a sandboxed server sees: an allow-list turned into bubblewrap mounts.

Nothing of the host is visible unless it is listed: the system runtime (/usr and the /bin,
/lib* links into it), the /etc files a runtime reads (dynamic linker, CA certificates, time
zone; name resolution only when the server has network), a minimal passwd/group, the server's
own program (its venv or node_modules tree and the interpreter behind it, every symlink on
the way recreated), the paths its spec names, and its sandbox dir. So the user's home, the project
directory (its `.env`), the store and other servers' sandboxes stay out of sight.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from pydantic import BaseModel, Field

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# read by ld.so, TLS clients (certificates only: /etc/ssl/private stays out), time zone code,
# `platform` and fontconfig; none of them holds a secret
ETC_RUNTIME = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "pki/tls/certs",
    "pki/tls/openssl.cnf",
    "pki/ca-trust",
    "crypto-policies",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "os-release",
    "fonts",
)
ETC_NETWORK = ("resolv.conf", "hosts", "host.conf", "gai.conf", "services", "protocols")
# a command of one of these names runs the script given as its first non-option argument
INTERPRETER_NAME = re.compile(r"^(python[0-9.]*|node|nodejs|bun|deno|ruby|perl|php|bash|sh|dash)$")
MAX_LINKS = 32  # symlinks followed per path (the kernel gives up at 40)
MAX_SHEBANG_HOPS = 4  # script -> interpreter -> ... (env, a venv python, its base)


class View(BaseModel):
    """Host paths mounted at their own place in the sandbox, plus generated /etc files."""

    read_only: list[str] = Field(default_factory=list)
    writable: list[str] = Field(default_factory=list)
    symlinks: dict[str, str] = Field(default_factory=dict)  # link path -> target, as on host
    files: dict[str, str] = Field(default_factory=dict)  # path in the view -> host file

    def add(self, path: str | Path, *, writable: bool = False) -> None:
        """Make `path` reachable under its own name: bind its real location and recreate
        each symlink met on the way (a venv's python, a symlinked fleet dir, /etc/localtime)."""
        for link, target in list_links(Path(path)):
            self.symlinks.setdefault(str(link), target)
        real = os.path.realpath(path)
        if os.path.exists(real):
            (self.writable if writable else self.read_only).append(real)

    def covers(self, path: str) -> bool:
        """True when `path` is visible through a bound directory already."""
        return any(is_within(path, bound) for bound in [*self.read_only, *self.writable])

    def bwrap_args(self) -> list[str]:
        """Mount options: links, then binds from the outside in, nothing bound twice; a
        path bound writable is never also bound read-only."""
        args: list[str] = []
        for link, target in sorted(self.symlinks.items()):
            if not self.covers(link):
                args += ["--symlink", target, link]
        writable = outermost(self.writable)
        read_only = [p for p in self.read_only if not any(is_within(p, w) for w in writable)]
        binds = outermost(read_only + writable)
        for path in sorted(binds, key=lambda bound: (bound.count("/"), bound)):
            args += ["--bind" if path in writable else "--ro-bind", path, path]
        for view_path, host_file in sorted(self.files.items()):
            args += ["--ro-bind", host_file, view_path]
        return args


def is_within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def outermost(paths: list[str]) -> list[str]:
    unique = sorted(set(paths))
    return [p for p in unique if not any(q != p and is_within(p, q) for q in unique)]


def base_view(network: bool) -> View:
    """The system runtime every server gets: /usr, the /bin and /lib* links, runtime /etc."""
    view = View()
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            view.symlinks[path] = os.readlink(path)
        elif os.path.isdir(path):
            view.read_only.append(path)
    for name in ETC_RUNTIME + (ETC_NETWORK if network else ()):
        if os.path.lexists(Path("/etc", name)):
            view.add(Path("/etc", name))
    return view


def list_links(path: Path) -> list[tuple[Path, str]]:
    """(link, target) for every symlink met while resolving `path`, in order."""
    return [(link, target) for link, target, _ in resolve_links(path)]


def resolve_links(path: Path) -> list[tuple[Path, str, Path]]:
    """(link, target, the whole path with that link replaced) per symlink met, in order."""
    links: list[tuple[Path, str, Path]] = []
    current, rest = Path("/"), list(path.parts[1:])
    while rest and len(links) < MAX_LINKS:
        part = rest.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        if not candidate.is_symlink():
            current = candidate
            continue
        target = os.readlink(candidate)
        if os.path.isabs(target):
            current, rest = Path("/"), list(Path(target).parts[1:]) + rest
        else:
            rest = list(Path(target).parts) + rest
        links.append((candidate, target, Path(os.path.normpath(current.joinpath(*rest)))))
    return links


def install_roots(path: Path) -> list[Path]:
    """What a program needs besides its file: its venv (and the base interpreter the venv
    names), the node_modules tree holding it (Node resolves packages there, never above),
    or its `bin` dir with the sibling `lib` (a pyenv or nvm prefix); a lone binary or
    script needs only itself."""
    for parent in path.parents:
        if (parent / "pyvenv.cfg").is_file():
            return [parent, *venv_base(parent)]
    # the outermost node_modules (packages nest theirs), not the prefix around it: after
    # `npm install` in ~ that prefix is the home directory
    for parent in reversed(path.parents):
        if parent.name == "node_modules":
            return [parent]
    if path.parent.name == "bin":
        return prefix_dirs(path.parent)
    return [path]


def prefix_dirs(bin_dir: Path) -> list[Path]:
    prefix = bin_dir.parent
    return [bin_dir, *(prefix / lib for lib in ("lib", "lib64") if (prefix / lib).is_dir())]


def venv_base(venv: Path) -> list[Path]:
    """The base interpreter's bin and lib dirs, from pyvenv.cfg's `home` (PEP 405)."""
    for line in (venv / "pyvenv.cfg").read_text(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            return prefix_dirs(Path(os.path.realpath(value.strip())))
    return []


def read_shebang(path: Path, search_path: str) -> Path | None:
    """The interpreter a script's `#!` line names (`/usr/bin/env node`: node on PATH)."""
    try:
        with open(path, "rb") as script:
            first_line = script.readline(256)
    except OSError:
        return None
    words = first_line[2:].decode(errors="replace").split()
    if not first_line.startswith(b"#!") or not words:
        return None
    if Path(words[0]).name != "env":
        return Path(words[0])
    names = [word for word in words[1:] if not word.startswith("-")]
    found = shutil.which(names[0], path=search_path) if names else None
    return Path(found) if found else None


def script_argument(argv: list[str]) -> Path | None:
    """The script an interpreter command runs: its first non-option argument, when that is
    an existing absolute file (`python -m mod`, `node -e code` name none)."""
    for arg in argv[1:]:
        if arg in ("-m", "-c", "-e", "--eval"):
            return None
        if not arg.startswith("-"):
            return Path(arg) if os.path.isabs(arg) and os.path.isfile(arg) else None
    return None


def program_paths(argv: list[str], search_path: str) -> list[Path]:
    """Every path the program in `argv` runs from: the command and each symlink and `#!`
    interpreter behind it, with their install roots, and an interpreter's script."""
    found = shutil.which(argv[0], path=search_path)
    command = Path(found or argv[0])
    paths: list[Path] = []
    hop: Path | None = command
    for _ in range(MAX_SHEBANG_HOPS):
        if hop is None:
            break
        paths.append(hop)
        for step in [hop, *(after for _, _, after in resolve_links(hop))]:
            paths += install_roots(step)
        hop = read_shebang(Path(os.path.realpath(hop)), search_path)
    names = (command.name, Path(os.path.realpath(command)).name)
    script = script_argument(argv)
    if script is not None and any(INTERPRETER_NAME.match(name) for name in names):
        paths.append(script)
    too_wide = {Path("/"), Path.home(), *Path.home().parents}  # a program never brings these
    return [path for path in paths if Path(os.path.normpath(path)) not in too_wide]
