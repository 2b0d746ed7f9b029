import AllotTransport
import ArgumentParser
import Logging

/// `--log-format`: `text` (swift-log's default lines) or `json` (`JSONLogHandler`: one JSON
/// object per line on standard error).
enum LogFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json

    /// Installs the handler for the whole process (once, before the first logger is made).
    func bootstrap() {
        guard self == .json else { return }
        LoggingSystem.bootstrap { JSONLogHandler(label: $0) }
    }
}
