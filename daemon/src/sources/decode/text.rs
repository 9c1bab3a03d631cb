//! The text formats: `number`, `csv`, `key-value`. Each payload is one
//! reading; the caller has trimmed it and checked it is UTF-8.

use std::borrow::Cow;

use super::{Builder, DecodeContext, DecodeError, is_ts_key, parse_number, parse_ts, snippet};
use crate::reading::Reading;

pub(super) fn decode_number(text: &str, ctx: &DecodeContext<'_>) -> Result<Reading, DecodeError> {
    let value = parse_number(ctx.field, text)?;
    let mut b = Builder::new(ctx, 1);
    b.field(Cow::Borrowed(ctx.field), value)?;
    b.finish()
}

pub(super) fn decode_csv(line: &str, ctx: &DecodeContext<'_>) -> Result<Reading, DecodeError> {
    let columns = ctx.csv_columns;
    // Count first, so a short or long line is `column-count` rather than
    // whatever its first misplaced cell would be.
    let mut found = 0;
    for cell in CsvCells::new(line) {
        cell?;
        found += 1;
    }
    if found != columns.len() {
        return Err(DecodeError::ColumnCount {
            expected: columns.len(),
            found,
        });
    }
    let mut b = Builder::new(ctx, columns.len());
    for (column, cell) in columns.iter().zip(CsvCells::new(line)) {
        let cell = cell?;
        if cell.is_empty() {
            continue;
        }
        if column.eq_ignore_ascii_case("ts") || column.eq_ignore_ascii_case("timestamp") {
            b.ts(column, Some(parse_ts(column, &cell)?))?;
        } else if column.eq_ignore_ascii_case("sensor") {
            b.sensor(column, Some(cell.into_owned()))?;
        } else {
            b.field(Cow::Borrowed(column), parse_number(column, &cell)?)?;
        }
    }
    b.finish()
}

/// The cells of one CSV line, unquoted and trimmed; borrowed unless a
/// quoted cell contains `""`.
struct CsvCells<'a> {
    /// The unread rest of the line; `None` after the last cell.
    rest: Option<&'a str>,
}

impl<'a> CsvCells<'a> {
    fn new(line: &'a str) -> Self {
        CsvCells { rest: Some(line) }
    }

    fn quoted(&mut self, body: &'a str) -> Result<Cow<'a, str>, DecodeError> {
        let mut owned: Option<String> = None;
        let mut from = 0;
        loop {
            let Some(at) = body[from..].find('"').map(|i| from + i) else {
                return Err(DecodeError::MalformedCsv("unterminated quoted cell"));
            };
            if body.as_bytes().get(at + 1) == Some(&b'"') {
                // `""`: keep one quote.
                owned
                    .get_or_insert_with(String::new)
                    .push_str(&body[from..=at]);
                from = at + 2;
                continue;
            }
            let after = body[at + 1..].trim_start_matches([' ', '\t']);
            if after.is_empty() {
                self.rest = None;
            } else if let Some(rest) = after.strip_prefix(',') {
                self.rest = Some(rest);
            } else {
                return Err(DecodeError::MalformedCsv("text after a closing quote"));
            }
            return Ok(match owned {
                None => Cow::Borrowed(body[..at].trim()),
                Some(mut s) => {
                    s.push_str(&body[from..at]);
                    let trimmed = s.trim();
                    if trimmed.len() == s.len() {
                        Cow::Owned(s)
                    } else {
                        Cow::Owned(trimmed.to_string())
                    }
                }
            });
        }
    }
}

impl<'a> Iterator for CsvCells<'a> {
    type Item = Result<Cow<'a, str>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?.trim_start_matches([' ', '\t']);
        let res = if let Some(body) = rest.strip_prefix('"') {
            self.quoted(body)
        } else {
            let (cell, next) = match rest.split_once(',') {
                Some((cell, next)) => (cell, Some(next)),
                None => (rest, None),
            };
            self.rest = next;
            if cell.contains('"') {
                Err(DecodeError::MalformedCsv("quote inside an unquoted cell"))
            } else if cell.contains(['\r', '\n']) {
                Err(DecodeError::MalformedCsv(
                    "line break outside quotes (one line per payload)",
                ))
            } else {
                Ok(Cow::Borrowed(cell.trim()))
            }
        };
        if res.is_err() {
            self.rest = None;
        }
        Some(res)
    }
}

fn is_kv_separator(c: char) -> bool {
    c.is_ascii_whitespace() || c == ',' || c == ';'
}

pub(super) fn decode_key_value(
    text: &str,
    ctx: &DecodeContext<'_>,
) -> Result<Reading, DecodeError> {
    let mut b = Builder::new(ctx, 8);
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(is_kv_separator);
        if rest.is_empty() {
            break;
        }
        let key_end = rest
            .find(|c| c == '=' || c == ':' || is_kv_separator(c))
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        let after_key = rest[key_end..].trim_start_matches([' ', '\t']);
        let token_end = |s: &str| s.find(is_kv_separator).unwrap_or(s.len());
        let Some(after_sep) = after_key.strip_prefix(['=', ':']) else {
            return Err(DecodeError::MalformedKeyValue(snippet(
                &rest[..token_end(rest)],
            )));
        };
        let value_start = after_sep.trim_start_matches([' ', '\t']);
        let value_end = token_end(value_start);
        let value = &value_start[..value_end];
        if key.is_empty() || value.is_empty() {
            let consumed = rest.len() - value_start.len() + value_end;
            return Err(DecodeError::MalformedKeyValue(snippet(&rest[..consumed])));
        }
        rest = &value_start[value_end..];
        if key == "sensor" {
            b.sensor(key, Some(value.to_string()))?;
        } else if is_ts_key(key) {
            b.ts(key, Some(parse_ts(key, value)?))?;
        } else {
            b.field(Cow::Borrowed(key), parse_number(key, value)?)?;
        }
    }
    b.finish()
}
