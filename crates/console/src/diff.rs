//! A line diff (longest common subsequence), for showing a resource before
//! and after an edit.

/// One line of a diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// In both.
    Same(&'a str),
    /// Only before.
    Removed(&'a str),
    /// Only after.
    Added(&'a str),
}

/// The lines of `before` and `after`, aligned. Quadratic in the number of
/// lines: meant for one resource, not for files.
pub fn lines<'a>(before: &'a str, after: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: the common subsequence length of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(n.max(m));
    while i < n && j < m {
        if a[i] == b[j] {
            out.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(Line::Removed(a[i]));
            i += 1;
        } else {
            out.push(Line::Added(b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| Line::Removed(l)));
    out.extend(b[j..].iter().map(|l| Line::Added(l)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_weight_is_one_removed_and_one_added_line() {
        let d = lines("a\nw: 80\nc\n", "a\nw: 50\nc\n");
        assert_eq!(
            d,
            vec![
                Line::Same("a"),
                Line::Removed("w: 80"),
                Line::Added("w: 50"),
                Line::Same("c")
            ]
        );
        assert_eq!(lines("", "x"), vec![Line::Added("x")]);
    }
}
