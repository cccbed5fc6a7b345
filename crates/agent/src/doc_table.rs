//! Reading a markdown table out of the docs, for the tests that hold a docs table and the code's
//! own table to each other (docs/agent.md's key, metric and status tables).

/// The table in `doc` whose header row starts with `header`: its text from the header row to the
/// first blank line (or the end), or `None` when `doc` has no such row.
pub fn table<'a>(doc: &'a str, header: &str) -> Option<&'a str> {
    let start = doc.find(header)?;
    doc[start..].split("\n\n").next()
}

/// The body rows of a table as [`table`] returns it (the header and separator rows left out),
/// each as its cells with the spaces around them trimmed.
pub fn rows(table: &str) -> impl Iterator<Item = Vec<&str>> {
    table.lines().skip(2).map(|row| {
        let mut cells: Vec<&str> = row.split('|').skip(1).map(str::trim).collect();
        if row.trim_end().ends_with('|') {
            cells.pop();
        }
        cells
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_table_under_its_header() {
        let doc = "intro\n\n| a | b |\n| --- | --- |\n| `x` | 1, 2 |\n|y|z|\n\nafter | c |\n";
        let t = table(doc, "| a |").expect("the table");
        assert_eq!(t, "| a | b |\n| --- | --- |\n| `x` | 1, 2 |\n|y|z|");
        assert_eq!(rows(t).collect::<Vec<_>>(), vec![vec!["`x`", "1, 2"], vec!["y", "z"]]);
        assert_eq!(table(doc, "| b | a |"), None);
    }
}
