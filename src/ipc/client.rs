//! The other terminal's side: find a guest by name, send one request,
//! print the answer. Used by `lkvm list/stop/pause/resume/stat/balloon/
//! debug`.

use std::io::{BufReader, Write};
use std::path::Path;
use std::time::Duration;

use super::proto::{Answer, Request};
use super::{home, probe, socket_names, socket_path, Error, Probe};

/// Sends `req` to guest `name` and returns its (successful) answer.
pub fn ask(name: &str, req: &Request) -> Result<Answer, Error> {
    ask_in(&home()?, name, req)
}

pub fn ask_in(home: &Path, name: &str, req: &Request) -> Result<Answer, Error> {
    let path = socket_path(home, name);
    let stream = match probe(&path) {
        Probe::Alive(s) => s,
        Probe::Missing => return Err(Error::NoSuchGuest(name.to_string())),
        Probe::Stale => {
            // The guest died without cleaning up; its name is free again.
            let _ = std::fs::remove_file(&path);
            return Err(Error::NoSuchGuest(name.to_string()));
        }
        Probe::Denied => {
            return Err(Error::Permission {
                name: name.to_string(),
                path,
            })
        }
        Probe::Failed(source) => {
            return Err(Error::Dead {
                name: name.to_string(),
                source,
            })
        }
    };
    // A dump waits for every vCPU; anything else is quick.
    let timeout = Some(Duration::from_secs(10));
    let dead = |source| Error::Dead {
        name: name.to_string(),
        source,
    };
    stream.set_read_timeout(timeout).map_err(dead)?;
    stream.set_write_timeout(timeout).map_err(dead)?;
    (&stream)
        .write_all(format!("{}\n", req.to_line()).as_bytes())
        .map_err(dead)?;
    let answer = Answer::read_from(&mut BufReader::new(&stream))
        .map_err(|_| Error::BadAnswer(name.to_string()))?;
    match answer.error {
        Some(e) => Err(Error::Refused(name.to_string(), e)),
        None => Ok(answer),
    }
}

/// The running guests' names (stale sockets are removed on the way).
pub fn running() -> Result<Vec<String>, Error> {
    let home = home()?;
    Ok(socket_names(&home)
        .into_iter()
        .filter(|name| match probe(&socket_path(&home, name)) {
            Probe::Alive(_) => true,
            Probe::Stale => {
                let _ = std::fs::remove_file(socket_path(&home, name));
                false
            }
            _ => false,
        })
        .collect())
}

/// A string as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `key=value` fields as a JSON object; values that are numbers stay
/// numbers.
pub fn json_object(fields: &[(String, String)]) -> String {
    let items: Vec<String> = fields
        .iter()
        .map(|(k, v)| {
            let value = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                v.clone()
            } else {
                json_str(v)
            };
            format!("{}: {}", json_str(k), value)
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_escaped_and_numbers_stay_numbers() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        let o = json_object(&[("name".into(), "g1".into()), ("pid".into(), "42".into())]);
        assert_eq!(o, "{\"name\": \"g1\", \"pid\": 42}");
    }

    #[test]
    fn a_missing_guest_is_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("lkvm-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = ask_in(&dir, "nobody", &Request::Info).unwrap_err();
        assert_eq!(err.to_string(), "no guest named 'nobody' is running");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
