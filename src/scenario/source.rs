//! Where a scenario's errors point: the file's name and text, so that a value's byte span
//! becomes `file:line:col`.

use std::ops::Range;

use toml::Spanned;

use super::ScenarioError;

/// A scenario's file name and text.
pub(super) struct Source<'a> {
    /// The name errors give.
    pub file: &'a str,
    /// Its text.
    pub text: &'a str,
}

/// Line and column (1-based) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl Source<'_> {
    /// An error at the value spanning `span`.
    pub fn at(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.file.to_string(),
            at: Some(line_col(self.text, span.start)),
            message: message.into(),
        }
    }

    /// An error at the `index`-th table headed `header` (`[network]`, `[[instance_types]]`), for
    /// tables deserialised without positions; the whole file if it has no such header.
    pub fn at_table(
        &self,
        header: &str,
        index: usize,
        message: impl Into<String>,
    ) -> ScenarioError {
        let mut offset = 0;
        let found = self.text.lines().filter_map(|line| {
            let at = offset;
            offset += line.len() + 1;
            (line.trim() == header).then_some(at)
        });
        match found.into_iter().nth(index) {
            Some(at) => self.at(at..at, message),
            None => self.whole(message),
        }
    }

    /// An error about the whole file.
    pub fn whole(&self, message: impl Into<String>) -> ScenarioError {
        ScenarioError { file: self.file.to_string(), at: None, message: message.into() }
    }

    /// An optional integer setting within `range` (`default` when absent), or an error at it.
    pub fn ranged<T>(
        &self,
        value: &Option<Spanned<T>>,
        name: &str,
        range: std::ops::RangeInclusive<T>,
        default: T,
    ) -> Result<T, ScenarioError>
    where
        T: Copy + PartialOrd + std::fmt::Display,
    {
        match value {
            Some(v) if !range.contains(v.get_ref()) => Err(self.at(
                v.span(),
                format!("{name} {} is not {} to {}", v.get_ref(), range.start(), range.end()),
            )),
            Some(v) => Ok(*v.get_ref()),
            None => Ok(default),
        }
    }
}

/// A path name as a scenario writes it (`sriov`, `emulated`, `efa`).
pub(super) fn parse_path(
    s: &Spanned<String>,
    src: &Source<'_>,
) -> Result<super::PathName, ScenarioError> {
    use super::PathName;
    match s.get_ref().as_str() {
        "sriov" => Ok(PathName::Sriov),
        "emulated" => Ok(PathName::Emulated),
        "efa" => Ok(PathName::Efa),
        other => Err(src.at(
            s.span(),
            format!("unknown path `{other}`: expected `sriov`, `emulated` or `efa`"),
        )),
    }
}
