#!/usr/bin/env python3
"""Local catch-all destination for `scripts/run-local.sh`: a real SMTP server (aiosmtpd) that
accepts every message for every recipient and stores it as an .eml file, so mail sent through
the local gateway can be seen arriving. Not for production: a real deployment routes to the
Internet instead."""
import argparse
import asyncio
import time
from pathlib import Path

from aiosmtpd.controller import Controller


class StoreAsEml:
    def __init__(self, folder: Path):
        self.folder = folder
        self.counter = 0

    async def handle_DATA(self, server, session, envelope):
        self.counter += 1
        name = self.folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{self.counter:06d}.eml"
        header = f"X-Sink-Envelope-From: <{envelope.mail_from}>\r\nX-Sink-Envelope-To: " + \
                 ", ".join(f"<{r}>" for r in envelope.rcpt_tos) + "\r\n"
        name.write_bytes(header.encode() + envelope.content)
        print(f"sink: stored {name.name} from <{envelope.mail_from}> to {envelope.rcpt_tos}", flush=True)
        return "250 2.0.0 Stored"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=2526)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    controller = Controller(StoreAsEml(folder), hostname="127.0.0.1", port=args.port,
                            data_size_limit=100 * 1024 * 1024)
    controller.start()
    print(f"sink: listening on 127.0.0.1:{args.port}, storing into {folder}", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
