# Test sink for SMTPClientTests: an aiosmtpd server on 127.0.0.1 that refuses recipients
# starting with "refuse", records each accepted message as one JSON line, and writes its
# port to a file once it is listening. Exits when stdin closes (or after 120 s).
import asyncio, base64, json, socket, sys, threading, time
from aiosmtpd.controller import Controller

out_path, port_path = sys.argv[1], sys.argv[2]

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refuse"):
            return "550 5.1.1 <%s>: Recipient address rejected" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        record = {"mail_from": envelope.mail_from, "mail_options": envelope.mail_options,
                  "rcpt_tos": envelope.rcpt_tos,
                  "content": base64.b64encode(envelope.original_content).decode()}
        with open(out_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        return "250 2.0.0 Message accepted"

s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
controller = Controller(Handler(), hostname="127.0.0.1", port=port, data_size_limit=10_000_000)
controller.start()
with open(port_path + ".tmp", "w") as f:
    f.write(str(port))
import os; os.rename(port_path + ".tmp", port_path)

def watch_stdin():
    sys.stdin.read()
    os._exit(0)
threading.Thread(target=watch_stdin, daemon=True).start()
time.sleep(120)
controller.stop()
