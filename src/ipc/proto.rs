//! Requests and answers on the control socket, as text lines.

use std::io::{self, BufRead, Write};

/// The longest request line a guest accepts.
pub const MAX_REQUEST: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Name, pid, state, vCPUs and RAM.
    Info,
    Stop,
    Pause,
    Resume,
    /// The balloon's memory statistics.
    MemoryStats,
    /// Every network card's counters.
    NetStats,
    Inflate(u64),
    Deflate(u64),
    /// Every vCPU's registers and the memory map.
    Dump,
    Nmi(u32),
    Sysrq(u8),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty request")]
    Empty,
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLong,
    #[error("request is not text")]
    NotText,
    #[error("unknown request '{0}'")]
    Unknown(String),
    #[error("'{0}' needs {1}")]
    Argument(&'static str, &'static str),
}

impl Request {
    pub fn parse(line: &[u8]) -> Result<Request, ParseError> {
        if line.len() > MAX_REQUEST {
            return Err(ParseError::TooLong);
        }
        let text = std::str::from_utf8(line).map_err(|_| ParseError::NotText)?;
        let mut words = text.split_ascii_whitespace();
        let cmd = words.next().ok_or(ParseError::Empty)?;
        let arg = words.next();
        let extra = words.next();
        let number = |what: &'static str, need: &'static str| -> Result<u64, ParseError> {
            match (arg.and_then(|a| a.parse().ok()), extra) {
                (Some(n), None) => Ok(n),
                _ => Err(ParseError::Argument(what, need)),
            }
        };
        let bare = |r: Request| match arg {
            None => Ok(r),
            Some(_) => Err(ParseError::Argument(cmd_name(&r), "no argument")),
        };
        match cmd {
            "info" => bare(Request::Info),
            "stop" => bare(Request::Stop),
            "pause" => bare(Request::Pause),
            "resume" => bare(Request::Resume),
            "memory-stats" => bare(Request::MemoryStats),
            "net-stats" => bare(Request::NetStats),
            "dump" => bare(Request::Dump),
            "inflate" => number("inflate", "a size in MiB").map(Request::Inflate),
            "deflate" => number("deflate", "a size in MiB").map(Request::Deflate),
            "nmi" => number("nmi", "a vCPU number")
                .and_then(|n| {
                    u32::try_from(n).map_err(|_| ParseError::Argument("nmi", "a vCPU number"))
                })
                .map(Request::Nmi),
            "sysrq" => match (arg.map(str::as_bytes), extra) {
                (Some([c]), None) if c.is_ascii_graphic() => Ok(Request::Sysrq(*c)),
                _ => Err(ParseError::Argument("sysrq", "one printable character")),
            },
            other => Err(ParseError::Unknown(other.chars().take(32).collect())),
        }
    }

    pub fn to_line(&self) -> String {
        match self {
            Request::Inflate(n) => format!("inflate {n}"),
            Request::Deflate(n) => format!("deflate {n}"),
            Request::Nmi(n) => format!("nmi {n}"),
            Request::Sysrq(c) => format!("sysrq {}", *c as char),
            other => cmd_name(other).to_string(),
        }
    }
}

fn cmd_name(r: &Request) -> &'static str {
    match r {
        Request::Info => "info",
        Request::Stop => "stop",
        Request::Pause => "pause",
        Request::Resume => "resume",
        Request::MemoryStats => "memory-stats",
        Request::NetStats => "net-stats",
        Request::Inflate(_) => "inflate",
        Request::Deflate(_) => "deflate",
        Request::Dump => "dump",
        Request::Nmi(_) => "nmi",
        Request::Sysrq(_) => "sysrq",
    }
}

/// An answer that does not follow the protocol.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed answer")]
pub struct Malformed;

/// An answer: success with `key=value` fields, or one error message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub error: Option<String>,
    pub fields: Vec<(String, String)>,
}

impl Answer {
    pub fn ok() -> Self {
        Answer::default()
    }

    pub fn error(msg: impl Into<String>) -> Self {
        Answer {
            error: Some(msg.into()),
            fields: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.fields.push((key.to_string(), value.to_string()));
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Writes the answer; newlines in values become separate fields of the
    /// same key, so any text survives the line protocol.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut out = String::new();
        match &self.error {
            Some(e) => {
                out.push_str("error ");
                out.push_str(&e.replace('\n', " "));
                out.push('\n');
            }
            None => out.push_str("ok\n"),
        }
        for (k, v) in &self.fields {
            for line in v.split('\n') {
                out.push_str(k);
                out.push('=');
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push('\n');
        w.write_all(out.as_bytes())
    }

    /// Reads an answer up to its empty line.
    pub fn read_from(r: &mut impl BufRead) -> Result<Answer, Malformed> {
        let mut line = String::new();
        r.read_line(&mut line).map_err(|_| Malformed)?;
        let head = line.trim_end_matches('\n');
        let mut answer = match head {
            "ok" => Answer::ok(),
            h => match h.strip_prefix("error ") {
                Some(msg) => Answer::error(msg),
                None => return Err(Malformed),
            },
        };
        loop {
            line.clear();
            if r.read_line(&mut line).map_err(|_| Malformed)? == 0 {
                return Err(Malformed);
            }
            let l = line.trim_end_matches('\n');
            if l.is_empty() {
                return Ok(answer);
            }
            let (k, v) = l.split_once('=').ok_or(Malformed)?;
            answer.fields.push((k.to_string(), v.to_string()));
        }
    }

    /// All values of `key`, joined by newlines (multi-line text).
    pub fn text(&self, key: &str) -> String {
        self.fields
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_refused() {
        for r in [
            Request::Info,
            Request::Stop,
            Request::Pause,
            Request::Resume,
            Request::MemoryStats,
            Request::NetStats,
            Request::Inflate(64),
            Request::Deflate(1),
            Request::Dump,
            Request::Nmi(3),
            Request::Sysrq(b'c'),
        ] {
            assert_eq!(Request::parse(r.to_line().as_bytes()), Ok(r));
        }
        assert_eq!(Request::parse(b""), Err(ParseError::Empty));
        assert_eq!(Request::parse(b"  "), Err(ParseError::Empty));
        assert_eq!(Request::parse(&[0xff, 0xfe]), Err(ParseError::NotText));
        assert_eq!(Request::parse(&[b'a'; 300]), Err(ParseError::TooLong));
        assert_eq!(
            Request::parse(b"reboot"),
            Err(ParseError::Unknown("reboot".into()))
        );
        assert!(Request::parse(b"inflate").is_err());
        assert!(Request::parse(b"inflate -3").is_err());
        assert!(Request::parse(b"inflate 3 4").is_err());
        assert!(Request::parse(b"stop now").is_err());
        assert!(Request::parse(b"sysrq cc").is_err());
        assert!(Request::parse(b"nmi 99999999999").is_err());
    }

    #[test]
    fn answers_round_trip_with_multiline_text() {
        let a = Answer::ok()
            .with("name", "g1")
            .with("dump", "line one\nline two");
        let mut buf = Vec::new();
        a.write_to(&mut buf).unwrap();
        let back = Answer::read_from(&mut &buf[..]).unwrap();
        assert_eq!(back.get("name"), Some("g1"));
        assert_eq!(back.text("dump"), "line one\nline two");
        let e = Answer::error("no balloon\nhere");
        buf.clear();
        e.write_to(&mut buf).unwrap();
        assert_eq!(
            Answer::read_from(&mut &buf[..]).unwrap().error.as_deref(),
            Some("no balloon here")
        );
        assert!(Answer::read_from(&mut &b"hello\n\n"[..]).is_err());
        assert!(Answer::read_from(&mut &b"ok\nno-equals\n\n"[..]).is_err());
        assert!(
            Answer::read_from(&mut &b"ok\nk=v\n"[..]).is_err(),
            "cut short"
        );
    }
}
