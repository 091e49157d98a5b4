//! Reading the hypervisor's serial console: log lines for people, `@domino ` lines that
//! carry one JSON results record each (the protocol in `abi::tool::console`).

use abi::tool::console::{RECORD_PREFIX, TRACE_PREFIX};

/// One line of serial output, with every `\r` removed.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A log line, shown to the user as it arrives.
    Log(String),
    /// The JSON after the record prefix, copied verbatim into the results file.
    Record(String),
    /// One scheduling-trace event (after the trace prefix), for `--trace`.
    Trace(String),
}

/// Classifies one raw serial line (without its `\n`). The serial port carries bytes, not
/// UTF-8, so stray bytes (a garbled character during reset) are replaced, not fatal.
pub fn classify(raw: &[u8]) -> Line {
    let text: String = String::from_utf8_lossy(raw)
        .chars()
        .filter(|&c| c != '\r')
        .collect();
    if let Some(json) = text.strip_prefix(RECORD_PREFIX) {
        Line::Record(json.to_string())
    } else if let Some(event) = text.strip_prefix(TRACE_PREFIX) {
        Line::Trace(event.to_string())
    } else {
        Line::Log(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_logs() {
        assert_eq!(
            classify(b"@domino {\"kind\":\"boot\"}\r"),
            Line::Record("{\"kind\":\"boot\"}".into())
        );
        assert_eq!(
            classify(b"[0 0.001] hello\r"),
            Line::Log("[0 0.001] hello".into())
        );
        // The prefix counts only at the start of a line.
        assert_eq!(classify(b"x @domino {}"), Line::Log("x @domino {}".into()));
        assert_eq!(classify(b"\xff ok"), Line::Log("\u{fffd} ok".into()));
    }
}
