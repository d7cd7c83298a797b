//! Files and progress for the operator commands: numbered input lines, output written to a
//! temporary file renamed at the end, and a progress bar on a terminal only.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::CliError;

/// Lines of an input file (or of standard input for `-`), numbered from 1.
pub(crate) struct Input {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    line: usize,
    len: Option<u64>,
    consumed: u64,
}

impl Input {
    /// Opens `path`; `-` is standard input.
    pub(crate) fn open(path: &Path) -> Result<Input, CliError> {
        if path == Path::new("-") {
            return Ok(Input {
                path: path.to_owned(),
                reader: Box::new(BufReader::new(std::io::stdin())),
                line: 0,
                len: None,
                consumed: 0,
            });
        }
        let error = |source| CliError::Input {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(error)?;
        let metadata = file.metadata().map_err(error)?;
        if metadata.is_dir() {
            return Err(error(std::io::Error::other(
                "it is a directory; give a file written by the matching command",
            )));
        }
        Ok(Input {
            path: path.to_owned(),
            reader: Box::new(BufReader::with_capacity(1 << 16, file)),
            line: 0,
            len: metadata.is_file().then_some(metadata.len()),
            consumed: 0,
        })
    }

    /// An input over bytes already in memory (tests).
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: &'static [u8]) -> Input {
        Input {
            path: PathBuf::from("-"),
            reader: Box::new(bytes),
            line: 0,
            len: Some(bytes.len() as u64),
            consumed: 0,
        }
    }

    /// The file's name as given (`-` for standard input).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size, when it is a regular file.
    pub(crate) fn len(&self) -> Option<u64> {
        self.len
    }

    /// Bytes read so far.
    pub(crate) fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The next line without its line ending, with its number, or `None` at the end.
    pub(crate) fn next_line(&mut self) -> Result<Option<(usize, Vec<u8>)>, CliError> {
        let mut buf = Vec::new();
        let read = self
            .reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| CliError::Input {
                path: self.path.clone(),
                source,
            })?;
        if read == 0 {
            return Ok(None);
        }
        self.consumed += read as u64;
        self.line += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        Ok(Some((self.line, buf)))
    }

    /// The next line that is not blank (trailing blank lines are common), or `None`.
    pub(crate) fn next_content_line(&mut self) -> Result<Option<(usize, Vec<u8>)>, CliError> {
        while let Some((number, line)) = self.next_line()? {
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some((number, line)));
            }
        }
        Ok(None)
    }

    /// A format error at `line` of this input.
    pub(crate) fn format_error(&self, line: usize, reason: impl Into<String>) -> CliError {
        CliError::Format {
            path: self.path.clone(),
            line,
            reason: reason.into(),
        }
    }

    /// Reads the header line: `<cqrs_id>[,<field>...]`, returned trimmed, with its fields.
    pub(crate) fn header(&mut self, expected: &str) -> Result<(String, Vec<String>), CliError> {
        let Some((number, line)) = self.next_line()? else {
            return Err(self.format_error(
                1,
                format!("the input is empty; expected a first line {expected}"),
            ));
        };
        let text = std::str::from_utf8(&line)
            .map_err(|_| self.format_error(number, "the first line is not UTF-8 text"))?
            .trim()
            .trim_start_matches('\u{feff}')
            .to_owned();
        let fields: Vec<String> = text.split(',').map(|f| f.trim().to_owned()).collect();
        if fields.first().is_none_or(|id| id.is_empty()) {
            return Err(self.format_error(
                number,
                format!("the first line names no cqrs_id; expected {expected}"),
            ));
        }
        Ok((text, fields))
    }
}

/// Where a command writes: standard output for `-`, or a temporary file beside the target,
/// renamed over it by [`Output::commit`] (dropped without commit, it is removed: nothing is
/// half-written).
pub(crate) struct Output {
    path: PathBuf,
    sink: Sink,
}

enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    File {
        writer: Option<BufWriter<File>>,
        temporary: PathBuf,
    },
}

impl Output {
    /// Opens `path` for writing (`-` is standard output). An existing file is refused unless
    /// `replace`.
    pub(crate) fn create(path: &Path, replace: bool) -> Result<Output, CliError> {
        if path == Path::new("-") {
            return Ok(Output {
                path: path.to_owned(),
                sink: Sink::Stdout(BufWriter::new(std::io::stdout())),
            });
        }
        let error = |source| CliError::Output {
            path: path.to_owned(),
            source,
        };
        if !replace && path.exists() {
            return Err(CliError::OutputExists(path.to_owned()));
        }
        let name = path
            .file_name()
            .ok_or_else(|| error(std::io::Error::other("not a file name")))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut attempt = 0u32;
        let (file, temporary) = loop {
            let mut temp_name = std::ffi::OsString::from(".");
            temp_name.push(name);
            temp_name.push(format!(
                ".{}.{}.{attempt}.tmp",
                std::process::id(),
                chrono::Utc::now().timestamp_micros()
            ));
            let candidate = dir.join(temp_name);
            match File::options()
                .write(true)
                .create_new(true)
                .open(&candidate)
            {
                Ok(file) => break (file, candidate),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => return Err(error(e)),
            }
        };
        Ok(Output {
            path: path.to_owned(),
            sink: Sink::File {
                writer: Some(BufWriter::with_capacity(1 << 16, file)),
                temporary,
            },
        })
    }

    /// The target as given.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `line` and a newline.
    pub(crate) fn line(&mut self, line: &str) -> Result<(), CliError> {
        let result = match &mut self.sink {
            Sink::Stdout(out) => out
                .write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n")),
            Sink::File { writer, .. } => match writer {
                Some(out) => out
                    .write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n")),
                None => Ok(()),
            },
        };
        result.map_err(|source| CliError::Output {
            path: self.path.clone(),
            source,
        })
    }

    /// Flushes, and for a file syncs it and renames it over the target.
    pub(crate) fn commit(mut self) -> Result<(), CliError> {
        let path = self.path.clone();
        let error = |source| CliError::Output {
            path: path.clone(),
            source,
        };
        match &mut self.sink {
            Sink::Stdout(out) => out.flush().map_err(error),
            Sink::File { writer, temporary } => {
                if let Some(out) = writer.take() {
                    let file = out.into_inner().map_err(|e| error(e.into_error()))?;
                    file.sync_all().map_err(error)?;
                }
                std::fs::rename(&*temporary, &path).map_err(error)?;
                // Renamed: nothing left to remove.
                temporary.clear();
                Ok(())
            }
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Sink::File { writer, temporary } = &mut self.sink {
            drop(writer.take());
            if !temporary.as_os_str().is_empty() {
                let _ = std::fs::remove_file(&*temporary);
            }
        }
    }
}

/// The bar's layout: a bar with ETA when the total is known, a spinner with the rate otherwise.
fn template(unit: Unit, total: bool) -> String {
    match (unit, total) {
        (Unit::Bytes, true) => {
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {prefix}"
                .to_owned()
        }
        (Unit::Bytes, false) => "{spinner} {msg} {bytes} ({bytes_per_sec}) {prefix}".to_owned(),
        (Unit::Items(items), true) => format!(
            "{{msg}} [{{bar:30}}] {{human_pos}}/{{human_len}} {items} ({{per_sec:0}}, ETA {{eta}}) {{prefix}}"
        ),
        (Unit::Items(items), false) => format!(
            "{{spinner}} {{msg}} {{human_pos}} {items} ({{per_sec:0}}, {{elapsed}}) {{prefix}}"
        ),
    }
}

/// A progress bar with rate and ETA on standard error when it is a terminal; silent
/// otherwise.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
}

/// What a progress bar counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unit {
    /// Rows or records, with or without a known total.
    Items(&'static str),
    /// Bytes of an input file.
    Bytes,
}

/// The total a progress bar shows, computed only when there is a terminal to show it on (a
/// count costs a query); `None` (a spinner) when the count fails.
pub(crate) fn progress_total<E>(count: impl FnOnce() -> Result<u64, E>) -> Option<u64> {
    if std::io::stderr().is_terminal() {
        count().ok()
    } else {
        None
    }
}

impl Progress {
    /// A bar for `what`; `total` gives a percentage and an ETA.
    pub(crate) fn start(what: &str, unit: Unit, total: Option<u64>) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let template = template(unit, total.is_some());
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar: Some(bar) }
    }

    /// Adds `n` to the position.
    pub(crate) fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Sets the position.
    pub(crate) fn set(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    /// A short note after the counters (`12 rejected`).
    pub(crate) fn note(&self, note: String) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(note);
        }
    }

    /// Prints a line on standard error without breaking the bar.
    pub(crate) fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| stderr_line(line)),
            None => stderr_line(line),
        }
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Writes a line on standard error. A closed standard error (`2>&1 | head`) is no failure of
/// the command: there is only no one left to tell, so the line is dropped instead of panicking
/// as `eprintln!` does.
pub(crate) fn stderr_line(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_without_their_endings() {
        let mut input = Input::from_bytes(b"author,1\r\n[1]\n\n[2]");
        assert_eq!(
            input.header("x").unwrap(),
            (
                "author,1".to_owned(),
                vec!["author".to_owned(), "1".to_owned()]
            )
        );
        assert_eq!(
            input.next_content_line().unwrap(),
            Some((2, b"[1]".to_vec()))
        );
        assert_eq!(
            input.next_content_line().unwrap(),
            Some((4, b"[2]".to_vec()))
        );
        assert_eq!(input.next_content_line().unwrap(), None);
    }

    #[test]
    fn an_empty_input_has_no_header() {
        let mut input = Input::from_bytes(b"");
        let error = input.header("`<cqrs_id>`").unwrap_err();
        assert!(error.to_string().contains("the input is empty"), "{error}");
        let mut input = Input::from_bytes(b",x\n");
        assert!(input.header("x").is_err());
    }

    #[test]
    fn progress_templates_are_valid() {
        for unit in [Unit::Bytes, Unit::Items("rows")] {
            for total in [true, false] {
                let template = template(unit, total);
                assert!(
                    ProgressStyle::with_template(&template).is_ok(),
                    "{template}"
                );
            }
        }
    }

    #[test]
    fn output_files_appear_only_when_committed() {
        let dir = std::env::temp_dir().join(format!("cqrs-cli-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.txt");
        let _ = std::fs::remove_file(&target);
        {
            let mut out = Output::create(&target, false).unwrap();
            out.line("half").unwrap();
        }
        assert!(!target.exists());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "no temporary file left"
        );
        let mut out = Output::create(&target, false).unwrap();
        out.line("a").unwrap();
        out.line("b").unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "a\nb\n");
        assert!(matches!(
            Output::create(&target, false),
            Err(CliError::OutputExists(_))
        ));
        let out = Output::create(&target, true).unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
