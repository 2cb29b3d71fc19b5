/// ZeroMQ topics of the data plane. Names are stable public interface.
///
/// A topic is also the name of the Redis pending set of the stage that consumes it:
/// a message published on `mail.scanned` stays in `smg:pending:mail.scanned` until the
/// classifier has recorded its result.
public enum Topic {
    public static let accepted = "mail.accepted"
    public static let scanned = "mail.scanned"
    public static let classified = "mail.classified"
    public static let outboundGood = "mail.outbound.good"
    public static let outboundBad = "mail.outbound.bad"

    public static let all = [accepted, scanned, classified, outboundGood, outboundBad]

    /// Prefix of the live event topics (`events.<type>`) that every process publishes for taps.
    public static let eventsPrefix = "events."
}
