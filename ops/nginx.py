"""The nginx config for the replicas: ops/nginx/paraformer-webui.conf.template with the upstreams filled in.

    ./run.sh nginx-config [--listen ADDR:PORT] [--upstreams H:P,H:P...] [--standalone DIR] [-o FILE]

The upstreams: --upstreams, else NGINX_UPSTREAMS (replicas on several boxes), else this box's replicas as
`run.sh replicas` lists them. --standalone DIR writes DIR/nginx.conf too, a complete config nginx runs as this
user from DIR. See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import grp
import math
import os
import pwd
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ops.common import ROOT, list_replicas, read_settings  # noqa: E402
from ops.settings import OpsSettings  # noqa: E402

TEMPLATES = ROOT / "ops" / "nginx"
_ADDRESS = re.compile(r"[][A-Za-z0-9._:-]+:[0-9]+")


def upstreams(given: str) -> list[str]:
    """HOST:PORT of every replica nginx sends to; SystemExit on one that is not HOST:PORT."""
    if given:
        addresses = [a for a in given.replace(" ", "").split(",") if a]
    else:
        addresses = [urlsplit(replica.health_url).netloc for replica in list_replicas()]
    for address in addresses:
        if not _ADDRESS.fullmatch(address):
            raise SystemExit(f"error: not HOST:PORT: {address!r}")
    return addresses


def site_config(settings: OpsSettings, addresses: list[str], listen: str) -> str:
    """The http-context config (paraformer-webui.conf)."""
    # The app's own limit plus 1 MB for the multipart envelope, so the app (not nginx) answers an oversized
    # upload, with its clear message.
    body_mb = math.ceil(settings.max_upload_mb) + 1
    servers = "\n".join(f"    server {a} max_fails=1 fail_timeout=5s;" for a in addresses)
    locations = "\n".join(
        f"    location = /replica/{n}/health  {{ proxy_pass http://{a}/health; }}\n"
        f"    location = /replica/{n}/metrics {{ proxy_pass http://{a}/metrics; }}"
        for n, a in enumerate(addresses)
    )
    generated = f"./run.sh nginx-config: {len(addresses)} replica(s) {' '.join(addresses)}, listen {listen}"
    text = (TEMPLATES / "paraformer-webui.conf.template").read_text(encoding="utf-8").rstrip("\n")
    for key, value in (
        ("LISTEN", listen),
        ("CLIENT_MAX_BODY_SIZE", f"{body_mb}m"),
        ("SERVERS", servers),
        ("REPLICA_LOCATIONS", locations),
        ("GENERATED", generated),
    ):
        text = text.replace("{{" + key + "}}", value)
    return text + "\n"


def standalone_config(folder: Path) -> str:
    """A complete nginx.conf that runs from `folder` as this user: logs, temp files and the site config inside."""
    # As root, nginx would run its workers as "nobody", who cannot read a private folder: keep this user.
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    text = (TEMPLATES / "standalone.conf.template").read_text(encoding="utf-8").rstrip("\n")
    return text.replace("{{DIR}}", str(folder)).replace("{{USER}}", user) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./run.sh nginx-config", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", metavar="ADDR:PORT", help="where nginx listens (NGINX_LISTEN, default 80)")
    parser.add_argument("--upstreams", metavar="H:P,...", help="the replicas (NGINX_UPSTREAMS; default: this box's)")
    parser.add_argument("--standalone", metavar="DIR", type=Path, help="write DIR/nginx.conf and the site config")
    parser.add_argument("-o", "--output", metavar="FILE", type=Path, help="write the config to FILE, not stdout")
    args = parser.parse_args(argv)
    settings = read_settings()
    listen = args.listen or settings.nginx_listen
    addresses = upstreams(args.upstreams or settings.nginx_upstreams)
    site = site_config(settings, addresses, listen)
    if args.standalone is None:
        if args.output is None:
            sys.stdout.write(site)
        else:
            args.output.write_text(site, encoding="utf-8")
            print(f"wrote {args.output}", file=sys.stderr)
        return 0
    folder = args.standalone if args.standalone.is_absolute() else ROOT / args.standalone
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    (folder / "paraformer-webui.conf").write_text(site, encoding="utf-8")
    (folder / "nginx.conf").write_text(standalone_config(folder), encoding="utf-8")
    print(f"wrote {folder}/nginx.conf and {folder}/paraformer-webui.conf; run nginx with:")
    print(f"  nginx -p {folder} -c {folder}/nginx.conf -g 'daemon off; pid {folder}/nginx.pid;'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
