import Hummingbird
import HTTPTypes
import NIOCore
import ServiceLifecycle
import SMGAdmin
import SMGBus
import SMGCore
import SMGStore
import Foundation

/// The live tail's `type` parameter: comma-separated event types, a trailing `*` matches a prefix
/// (`delivery.*`, `queue.*`, `*` = everything), as `smgctl tap --type`.
struct TailFilter: Sendable {
    let patterns: [String]

    init(_ text: String?) throws {
        let parts = (text ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for p in parts {
            let body = p.hasSuffix("*") ? p.dropLast() : Substring(p)
            guard p.count <= 100, body.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }) else {
                throw Failure.badRequest("type", "\"\(p)\" is not an event type pattern (letters, digits, . _ -, a trailing *)")
            }
        }
        patterns = parts
    }

    /// The ZeroMQ prefixes to subscribe to (the PUB side filters by them); `matches` filters the rest.
    var subscriptions: [String] {
        patterns.isEmpty || patterns.contains("*") ? [Topic.eventsPrefix]
            : patterns.map { Topic.eventsPrefix + ($0.hasSuffix("*") ? String($0.dropLast()) : $0) }
    }

    func matches(_ type: String) -> Bool {
        patterns.isEmpty || patterns.contains { p in
            p.hasSuffix("*") ? type.hasPrefix(String(p.dropLast())) : p == type
        }
    }
}

extension Admin {
    /// How often a stream without events sends a comment (keeps proxies from closing it, and finds
    /// a client that went away).
    static let keepaliveEvery = Duration.seconds(15)

    func tailRoutes(_ router: Router<AdminContext>) {
        router.get("/api/v1/events/stream") { request, context -> Response in
            let filter = try TailFilter(request.query["type"])
            return Response(status: .ok,
                            headers: [.contentType: "text/event-stream", .cacheControl: "no-store",
                                      HTTPField.Name("X-Accel-Buffering")!: "no"],
                            body: eventStream(filter))
        }

        router.get("/tail") { request, context -> Response in
            let type = request.query["type"] ?? ""
            let filterError: Failure?
            do { _ = try TailFilter(type); filterError = nil } catch { filterError = Failure.from(error) }
            let body = """
                \(Page.error(filterError))
                <form method="get" action="/tail" id="tail-form">
                \(Page.input("type", "Event types (comma-separated; a trailing * matches a prefix, e.g. delivered,queue.*)", value: type))
                <button id="tail-apply">Apply</button> <span id="tail-status" class="note">connecting…</span></form>
                <ol id="tail" class="mono" reversed></ol>
                \(filterError == nil ? Self.tailScript : "")
                """
            return Page.render("Live events", context, request: request, status: filterError?.status ?? .ok, body: body)
        }
    }

    /// Fills `#tail` from the stream of the filter in `#type`: newest on top, at most 500 lines,
    /// text only (`textContent`, never HTML).
    static let tailScript = """
        <script>
        (function () {
          var list = document.getElementById('tail'), status = document.getElementById('tail-status');
          var type = document.getElementById('type').value;
          var source = new EventSource('/api/v1/events/stream?type=' + encodeURIComponent(type));
          source.onopen = function () { status.textContent = 'live'; };
          source.onerror = function () { status.textContent = 'reconnecting…'; };
          source.onmessage = function (m) {
            var li = document.createElement('li'), text = m.data;
            li.className = 'event';
            try {
              var e = JSON.parse(m.data);
              text = e.time + '  ' + e.type + '  ' + (e.id || '-') + '  ' + e.process + '  ' + JSON.stringify(e.facts);
              li.setAttribute('data-type', e.type);
            } catch (x) {}
            li.textContent = text;
            list.insertBefore(li, list.firstChild);
            while (list.children.length > 500) list.removeChild(list.lastChild);
          };
        })();
        </script>
        """

    /// Server-sent events from every process's tap: one `data: <event JSON>` per event, a
    /// `: keepalive` comment every 15 s. Subscribes as `smgctl tap` does (the registry's `events`
    /// endpoints, looked up every 2 s so processes that start later are seen too and those gone
    /// are dropped; with the process's CurveZMQ keypair when the bus uses CURVE). Ends when the
    /// client goes away (a write fails: with no events, within two keepalives, as TCP takes the
    /// first write after the peer left) or the server shuts down gracefully; either way the
    /// discovery loop is cancelled and the subscriber closed.
    func eventStream(_ filter: TailFilter) -> ResponseBody {
        let zmq = process.zmq, registry = process.registry, logger = process.logger
        return ResponseBody { writer in
            let subscriber: TapSubscriber
            do {
                subscriber = try TapSubscriber(context: zmq, subscriptions: filter.subscriptions, highWaterMark: 1000, logger: logger)
            } catch {
                logger.error("live tail: cannot open a subscriber", metadata: ["error": "\(error)"])
                try await writer.write(ByteBuffer(string: "event: error\ndata: cannot subscribe to the taps\n\n"))
                try await writer.finish(nil)
                return
            }
            // Events and keepalives meet in one stream; the writer below is its only reader. A
            // client slower than the gateway loses the oldest lines, not the server's memory.
            let (lines, sink) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(2000))
            let discovery = Task {
                while !Task.isCancelled {
                    if let live = try? await registry.endpoints(kind: "events") {
                        // A tap this process cannot use (CURVE on one side only, or its key refused) is logged once.
                        for problem in await subscriber.follow(live).problems {
                            logger.error("live tail: cannot use tap endpoint", metadata: [
                                "endpoint": .string(problem.entry), "error": .string(problem.problem),
                            ])
                        }
                    }
                    try? await Task.sleep(for: .seconds(2))
                }
            }
            let receiver = Task {
                while true {
                    guard let message = try? await subscriber.receive() else { break }
                    guard let event = try? Event.decode(message.payload), filter.matches(event.type) else { continue }
                    sink.yield("data: \(event.jsonString())\n\n")
                }
                sink.finish()
            }
            let keepalive = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: Self.keepaliveEvery)
                    if Task.isCancelled { break }
                    sink.yield(": keepalive\n\n")
                }
            }
            func stop() async {
                discovery.cancel()
                keepalive.cancel()
                sink.finish()
                await subscriber.close()
                receiver.cancel()
            }
            do {
                try await withGracefulShutdownHandler {
                    try await writer.write(ByteBuffer(string: ": connected\nretry: 3000\n\n"))
                    for await line in lines { try await writer.write(ByteBuffer(string: line)) }
                } onGracefulShutdown: {
                    sink.finish()
                }
            } catch {
                // The client went away (the write failed): nothing to answer.
                await stop()
                return
            }
            await stop()
            try? await writer.finish(nil)
        }
    }
}
