//! Just enough JSON for Domain0's results records: one flat object per line, keys given by
//! the code, string values escaped (RFC 8259 section 7), integers as they are.

use alloc::string::String;
use core::fmt::{self, Write};

/// Builds one JSON object into a string.
pub struct Object<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Object<'a> {
    /// Starts an object at the end of `out`.
    pub fn new(out: &'a mut String) -> Self {
        out.push('{');
        Object { out, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push('"');
        escape_into(self.out, key);
        self.out.push_str("\":");
    }

    /// Adds `"key":"value"`, escaped.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.display(key, value)
    }

    /// Adds `"key":"<value formatted with Display>"`, escaped.
    pub fn display(&mut self, key: &str, value: impl fmt::Display) -> &mut Self {
        self.key(key);
        self.out.push('"');
        // Writing into a String cannot fail.
        let _ = write!(Escaper(self.out), "{value}");
        self.out.push('"');
        self
    }

    /// Adds `"key":value` for an integer.
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// Closes the object.
    pub fn finish(self) {
        self.out.push('}');
    }
}

/// Appends `s` to `out` as the inside of a JSON string.
pub fn escape_into(out: &mut String, s: &str) {
    let _ = Escaper(out).write_str(s);
}

/// A `fmt::Write` that escapes what passes through it.
struct Escaper<'a>(&'a mut String);

impl Write for Escaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                '\t' => self.0.push_str("\\t"),
                c if (c as u32) < 0x20 => write!(self.0, "\\u{:04x}", c as u32)?,
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_comma_separated_and_escaped() {
        let mut s = String::new();
        let mut o = Object::new(&mut s);
        o.str("kind", "run")
            .u64("n", 42)
            .str("name", "a\"b\\c\nd\u{1}");
        o.display("exit", format_args!("killed: {}", "x"));
        o.finish();
        assert_eq!(
            s,
            r#"{"kind":"run","n":42,"name":"a\"b\\c\nd\u0001","exit":"killed: x"}"#
        );
    }

    #[test]
    fn empty_object() {
        let mut s = String::new();
        Object::new(&mut s).finish();
        assert_eq!(s, "{}");
    }
}
