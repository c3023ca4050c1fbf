#!/usr/bin/env python3
"""Print COUNT distinct free TCP ports on 127.0.0.1, one per line.

All sockets are held open until every port is picked, so the ports are
distinct. Ports of the services running on the dev machines are never
returned (they are in use anyway; this is belt and braces).
"""
import socket
import sys

IN_USE = {1883, 3306, 4222, 5432, 5672, 6379, 9000}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    held, ports = [], []
    while len(ports) < count:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        held.append(s)
        port = s.getsockname()[1]
        if port not in IN_USE:
            ports.append(port)
    for s in held:
        s.close()
    print("\n".join(map(str, ports)))


if __name__ == "__main__":
    main()
