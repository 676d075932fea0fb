//! Plain-text tables in the layout of Python's prettytable, as upstream's
//! glance-cache-manage prints them.

/// Alignment of a column's cells (headers are always centred).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Centred, prettytable's default.
    Center,
    /// Right-aligned.
    Right,
}

/// Renders `rows` under `headers`.
pub fn render(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .fold(h.chars().count(), usize::max)
        })
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+";
    let line = |cells: Vec<String>| -> String {
        cells.iter().map(|c| format!("| {c} ")).collect::<String>() + "|"
    };
    let mut out = vec![rule.clone()];
    out.push(line(
        headers
            .iter()
            .zip(&widths)
            .map(|((h, _), w)| center(h, *w))
            .collect(),
    ));
    out.push(rule.clone());
    for row in rows {
        out.push(line(
            headers
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, ((_, align), w))| {
                    let cell = row.get(i).map_or("", String::as_str);
                    match align {
                        Align::Center => center(cell, *w),
                        Align::Right => format!("{cell:>w$}"),
                    }
                })
                .collect(),
        ));
    }
    out.push(rule);
    out.join("\n")
}

/// prettytable's centring: with uneven padding, odd-length text gets the extra space on
/// the right and even-length text on the left.
fn center(text: &str, width: usize) -> String {
    let len = text.chars().count();
    let excess = width.saturating_sub(len);
    let (left, right) = if excess.is_multiple_of(2) {
        (excess / 2, excess / 2)
    } else if len % 2 == 1 {
        (excess / 2, excess / 2 + 1)
    } else {
        (excess / 2 + 1, excess / 2)
    };
    format!("{}{text}{}", " ".repeat(left), " ".repeat(right))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_prettytable() {
        // Python: t = PrettyTable(("ID", "Size")); t.align["Size"] = "r";
        //         t.add_row(("abc", 5)); t.add_row(("a", 12345))
        let table = render(
            &[("ID", Align::Center), ("Size", Align::Right)],
            &[
                vec!["abc".into(), "5".into()],
                vec!["a".into(), "12345".into()],
            ],
        );
        let expected = "\
+-----+-------+
|  ID |  Size |
+-----+-------+
| abc |     5 |
|  a  | 12345 |
+-----+-------+";
        assert_eq!(table, expected);
    }
}
