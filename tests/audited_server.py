"""Run the app with a Python audit hook that logs every socket connect and name lookup.

    python tests/audited_server.py LOGFILE [webui flags...]

Used by the privacy test: the log must name loopback hosts only.
"""

from __future__ import annotations

import sys


def install_hook(log_path: str) -> None:
    log = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process

    def hook(event: str, args: tuple) -> None:
        if event == "socket.connect":
            address = args[1]
            host = address[0] if isinstance(address, tuple) else f"unix:{address}"
            log.write(f"connect {host}\n")
        elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"):
            log.write(f"lookup {args[0]}\n")
        elif event == "socket.sendto":
            address = args[1]
            log.write(f"sendto {address[0] if isinstance(address, tuple) else address}\n")

    sys.addaudithook(hook)


def main() -> None:
    install_hook(sys.argv[1])
    from webui.__main__ import main as webui_main

    sys.exit(webui_main(sys.argv[2:]))


if __name__ == "__main__":
    main()
