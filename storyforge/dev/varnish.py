"""Varnish in front of an origin on this machine, for `storyforge dev --cdn`, the tests
and bench/shield.py: the project's VCL (infra/varnish/storyforge.vcl) as it is, beside a
site file written here (the origin's address, who may purge, the origin secret), and
the `varnishd` command that runs them in the foreground.

varnishd runs as root only to drop to Debian's `varnish`/`vcache` accounts, which must
be able to read the VCL and its working directory: both are put in a directory of
their own under the system's temporary directory (`prepare`), never in a private one."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

VCL = Path(__file__).resolve().parents[2] / "infra" / "varnish" / "storyforge.vcl"
SITE_FILE = "storyforge-site.vcl"  # the name storyforge.vcl includes
LOOPBACK_PURGERS = ("127.0.0.1", "::1")
_ACL_ENTRY_RE = re.compile(r"[0-9A-Fa-f.:]{2,45}(?:/[0-9]{1,3})?")


class VarnishError(RuntimeError):
    """varnishd is missing, or did not come up."""


@dataclass(frozen=True)
class Site:
    """What storyforge.vcl needs to know of one site."""

    origin_port: int
    origin_host: str = "127.0.0.1"
    purgers: Sequence[str] = LOOPBACK_PURGERS  # addresses or CIDR ranges
    origin_secret_header: str = "X-Origin-Secret"
    origin_secret: str = ""  # "": the origin wants none
    probe: bool = True  # check the origin's /healthz (stale copies while it is down)


def site_vcl(site: Site) -> str:
    """The text of storyforge-site.vcl for `site` (infra/varnish/storyforge-site.vcl.example
    is the same for a hand-written one)."""
    for entry in site.purgers:
        if not _ACL_ENTRY_RE.fullmatch(entry):
            raise ValueError(f"not an address or CIDR range: {entry!r}")
    if '"}' in site.origin_secret or "\n" in site.origin_secret:
        raise ValueError("the origin secret cannot be written into VCL")
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", site.origin_secret_header):
        raise ValueError(f"not a header name for VCL: {site.origin_secret_header!r}")
    probe = (
        """
    .probe = {
        .url = "/healthz";
        .interval = 1s;
        .timeout = 1s;
        .window = 3;
        .threshold = 2;
        .initial = 2;
    }"""
        if site.probe
        else ""
    )
    acl = "\n".join(_acl_line(entry) for entry in site.purgers)
    secret = (
        f'    set bereq.http.{site.origin_secret_header} = {{"{site.origin_secret}"}};'
        if site.origin_secret
        else "    # the origin wants no secret header"
    )
    return f"""# written by storyforge/dev/varnish.py
backend storyforge_origin {{
    .host = "{site.origin_host}";
    .port = "{site.origin_port}";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 30s;{probe}
}}

acl storyforge_purgers {{
{acl}
}}

sub storyforge_origin_request {{
{secret}
}}
"""


def _acl_line(entry: str) -> str:
    address, _, bits = entry.partition("/")
    return f'    "{address}"/{bits};' if bits else f'    "{address}";'


def varnishd() -> str:
    """The varnishd binary (PATH, then Debian's /usr/sbin); VarnishError if absent."""
    found = shutil.which("varnishd") or shutil.which("varnishd", path="/usr/sbin:/sbin")
    if not found:
        raise VarnishError(
            "varnishd not found: install Debian's varnish and varnish-modules "
            "(apt-get install varnish varnish-modules)"
        )
    return found


def prepare(site: Site, vcl: Path = VCL) -> Path:
    """A new directory (mode 755, under the system's temporary directory) holding the
    VCL, the site file and varnishd's working directory `work/`."""
    if not vcl.is_file():
        raise VarnishError(f"the project's VCL is not at {vcl}")
    base = Path(tempfile.mkdtemp(prefix="storyforge-varnish-"))
    base.chmod(0o755)
    shutil.copyfile(vcl, base / vcl.name)
    (base / SITE_FILE).write_text(site_vcl(site))
    return base


def command(base: Path, port: int, *, host: str = "127.0.0.1", memory_mb: int = 256) -> list[str]:
    """varnishd in the foreground on host:port with the VCL prepared in `base`."""
    return [
        varnishd(),
        "-F",
        "-n",
        str(base / "work"),
        "-a",
        f"{host}:{port}",
        "-f",
        str(base / VCL.name),
        "-p",
        f"vcl_path={base}",
        "-s",
        f"malloc,{memory_mb}m",
    ]


def start(base: Path, port: int, *, memory_mb: int = 256) -> subprocess.Popen[bytes]:
    """varnishd running `command(base, port)`; its errors go to our stderr."""
    return subprocess.Popen(
        command(base, port, memory_mb=memory_mb),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float = 30.0) -> None:
    """Until something accepts on 127.0.0.1:port; VarnishError if varnishd exits first
    (its VCL did not compile, say) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise VarnishError(f"varnishd exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise VarnishError(f"varnishd not listening on port {port} after {timeout:g} s")


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running(site: Site, port: int, *, vcl: Path = VCL, memory_mb: int = 256) -> Iterator[str]:
    """Varnish for `site` on 127.0.0.1:port while the block runs; yields its URL."""
    base = prepare(site, vcl)
    try:
        proc = start(base, port, memory_mb=memory_mb)
        try:
            wait_listening(proc, port)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)
