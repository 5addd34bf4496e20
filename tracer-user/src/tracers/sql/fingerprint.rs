//! Statement fingerprints: the statement with every literal (numbers, strings, placeholders)
//! replaced by `?`, lists of them (IN lists, VALUES rows) folded to one, keywords upper-cased,
//! unquoted identifiers lower-cased, comments dropped and whitespace collapsed. Tokenized with
//! sqlparser's tokenizer in the MySQL or PostgreSQL dialect, so literals are what the database
//! would take for literals.

use sqlparser::{
    dialect::{Dialect, MySqlDialect, PostgreSqlDialect},
    keywords::{Keyword, RESERVED_FOR_COLUMN_ALIAS, RESERVED_FOR_TABLE_ALIAS},
    tokenizer::{Token, Tokenizer},
};

/// What a statement is, without its literals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// The statement's verb: SELECT, INSERT, BEGIN… (for WITH, the main verb).
    pub operation: String,
    /// The normalized text.
    pub text: String,
}

/// Keywords written upper-case besides sqlparser's reserved ones (its full keyword list also
/// has common column names such as ID and NAME, which stay identifiers).
const CLAUSE_KEYWORDS: &[Keyword] = &[
    Keyword::INSERT,
    Keyword::INTO,
    Keyword::VALUES,
    Keyword::UPDATE,
    Keyword::SET,
    Keyword::DELETE,
    Keyword::AND,
    Keyword::OR,
    Keyword::NOT,
    Keyword::IN,
    Keyword::IS,
    Keyword::NULL,
    Keyword::AS,
    Keyword::BY,
    Keyword::ASC,
    Keyword::DESC,
    Keyword::DISTINCT,
    Keyword::ALL,
    Keyword::EXISTS,
    Keyword::BETWEEN,
    Keyword::LIKE,
    Keyword::CASE,
    Keyword::WHEN,
    Keyword::THEN,
    Keyword::ELSE,
    Keyword::END,
    Keyword::BEGIN,
    Keyword::COMMIT,
    Keyword::ROLLBACK,
    Keyword::START,
    Keyword::TRANSACTION,
    Keyword::CREATE,
    Keyword::TABLE,
    Keyword::DROP,
    Keyword::ALTER,
    Keyword::INDEX,
    Keyword::TRUE,
    Keyword::FALSE,
    Keyword::SHOW,
    Keyword::USE,
    Keyword::REPLACE,
    Keyword::RETURNING,
    Keyword::DEFAULT,
    Keyword::SAVEPOINT,
    Keyword::RELEASE,
    Keyword::TRUNCATE,
    Keyword::CALL,
    Keyword::FOR,
    Keyword::DISTINCT,
    Keyword::IGNORE,
    Keyword::DUPLICATE,
    Keyword::KEY,
    Keyword::EXPLAIN,
    Keyword::DESCRIBE,
    Keyword::WORK,
    Keyword::ISOLATION,
    Keyword::LEVEL,
    Keyword::READ,
    Keyword::WRITE,
    Keyword::ONLY,
    Keyword::COMMITTED,
    Keyword::UNCOMMITTED,
    Keyword::REPEATABLE,
    Keyword::SERIALIZABLE,
    Keyword::SESSION,
    Keyword::LOCK,
    Keyword::SHARE,
    Keyword::NOWAIT,
    Keyword::SKIP,
    Keyword::LOCKED,
    Keyword::CONFLICT,
    Keyword::DO,
    Keyword::NOTHING,
    Keyword::OVER,
    Keyword::PARTITION,
];

fn is_sql_keyword(k: Keyword) -> bool {
    k != Keyword::NoKeyword
        && (RESERVED_FOR_TABLE_ALIAS.contains(&k)
            || RESERVED_FOR_COLUMN_ALIAS.contains(&k)
            || CLAUSE_KEYWORDS.contains(&k))
}

/// Verbs a WITH clause leads to.
const MAIN_VERBS: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"];

/// Tokens of `sql`; a statement cut short (the kernel keeps its first bytes) can end inside a
/// string or comment: then the tokens before that point, and `true`.
fn tokens(dialect: &dyn Dialect, sql: &str) -> (Vec<Token>, bool) {
    let mut text = sql;
    let mut truncated = false;
    for _ in 0..4 {
        match Tokenizer::new(dialect, text).tokenize() {
            Ok(t) => return (t, truncated),
            Err(e) => {
                truncated = true;
                let cut = byte_offset(text, e.location.line, e.location.column);
                // Cut at the start of the offending token: back to the last whitespace.
                let cut = text[..cut].rfind(char::is_whitespace).unwrap_or(0);
                text = &text[..cut];
            }
        }
    }
    (Vec::new(), true)
}

/// The byte offset of a 1-based (line, column) position.
fn byte_offset(text: &str, line: u64, column: u64) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == line {
            let col = l
                .char_indices()
                .nth(column.saturating_sub(1) as usize)
                .map_or(l.len(), |(b, _)| b);
            return (offset + col).min(text.len());
        }
        offset += l.len();
    }
    text.len()
}

fn is_literal(t: &Token, mysql: bool) -> bool {
    matches!(
        t,
        Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::Placeholder(_)
    ) || (mysql && matches!(t, Token::DoubleQuotedString(_)))
}

/// Computes the fingerprint of a statement.
pub fn fingerprint(sql: &str, postgres: bool) -> Fingerprint {
    let dialect: &dyn Dialect = if postgres {
        &PostgreSqlDialect {}
    } else {
        &MySqlDialect {}
    };
    let (toks, truncated) = tokens(dialect, sql);
    let mut out: Vec<String> = Vec::new();
    for t in &toks {
        match t {
            Token::Whitespace(_) => continue,
            t if is_literal(t, !postgres) => {
                // A sign in front of a number belongs to the literal.
                if matches!(t, Token::Number(..))
                    && matches!(out.last().map(String::as_str), Some("-" | "+"))
                    && out.len() >= 2
                    && is_operand_start(&out[out.len() - 2])
                {
                    out.pop();
                }
                out.push("?".to_owned());
            }
            // The first word is the verb, whatever sqlparser calls it.
            Token::Word(w)
                if w.quote_style.is_none() && (is_sql_keyword(w.keyword) || out.is_empty()) =>
            {
                out.push(w.value.to_uppercase());
            }
            Token::Word(w) if w.quote_style.is_none() => out.push(w.value.to_lowercase()),
            other => out.push(other.to_string()),
        }
    }
    // A statement terminator says nothing: `SELECT 1;` is `SELECT 1`.
    while out.last().is_some_and(|t| t == ";") {
        out.pop();
    }
    let out = fold_lists(out);
    let operation = operation(&out);
    let mut text = join(&out);
    if truncated {
        text.push_str(" …");
    }
    Fingerprint { operation, text }
}

/// After these, a `-` or `+` is a sign, not an operator.
fn is_operand_start(prev: &str) -> bool {
    matches!(
        prev,
        "(" | "," | "=" | "<" | ">" | "<=" | ">=" | "<>" | "!=" | "+" | "-" | "*" | "/"
    ) || prev.chars().all(|c| c.is_ascii_uppercase() || c == '_')
}

/// `( ? , ? , … )` becomes `(?)`; then `(?) , (?) , …` becomes `(?)`.
fn fold_lists(tokens: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "(" {
            let mut j = i + 1;
            let mut only_literals = true;
            while j < tokens.len() && tokens[j] != ")" {
                if tokens[j] != "?" && tokens[j] != "," {
                    only_literals = false;
                    break;
                }
                j += 1;
            }
            if only_literals && j < tokens.len() && j > i + 1 {
                out.push("(?)".to_owned());
                i = j + 1;
                continue;
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    let mut folded: Vec<String> = Vec::with_capacity(out.len());
    for t in out {
        let n = folded.len();
        if t == "(?)" && n >= 2 && folded[n - 1] == "," && folded[n - 2] == "(?)" {
            folded.pop();
            continue;
        }
        folded.push(t);
    }
    folded
}

fn operation(tokens: &[String]) -> String {
    let is_word = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_uppercase() || c == '_');
    let first = tokens.iter().find(|t| is_word(t));
    match first.map(String::as_str) {
        Some("WITH") => {
            let mut depth = 0i32;
            for t in tokens {
                match t.as_str() {
                    "(" => depth += 1,
                    ")" => depth -= 1,
                    v if depth == 0 && MAIN_VERBS.contains(&v) => return v.to_owned(),
                    _ => {}
                }
            }
            "WITH".to_owned()
        }
        Some(v) => v.to_owned(),
        None => "OTHER".to_owned(),
    }
}

/// Joins tokens with single spaces, none inside parentheses' edges, before commas or around dots.
fn join(tokens: &[String]) -> String {
    let mut s = String::new();
    let mut prev: Option<&str> = None;
    for t in tokens {
        let glue = match (prev, t.as_str()) {
            (None, _) => false,
            (Some("(" | "."), _) => false,
            (_, ")" | "," | "." | ";") => false,
            // A name right before a parenthesis is a call or a column list: no space.
            (Some(p), "(" | "(?)") => !is_name(p),
            _ => true,
        };
        if glue {
            s.push(' ');
        }
        s.push_str(t);
        prev = Some(t);
    }
    s
}

fn is_keyword(t: &str) -> bool {
    t.chars().all(|c| c.is_ascii_uppercase() || c == '_')
}

fn is_name(t: &str) -> bool {
    t.chars()
        .last()
        .is_some_and(|c| c.is_alphanumeric() || c == '_')
        && !is_keyword(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(sql: &str) -> (String, String) {
        let f = fingerprint(sql, false);
        (f.operation, f.text)
    }

    #[test]
    fn literals_differ_fingerprints_do_not() {
        let a = fp("SELECT * FROM instances WHERE id = 42 AND name = 'vm-1'");
        let b = fp("select *  from INSTANCES where id=7 and name=\"vm-2\"");
        assert_eq!(a, b);
        assert_eq!(a.0, "SELECT");
        assert_eq!(a.1, "SELECT * FROM instances WHERE id = ? AND name = ?");
    }

    #[test]
    fn lists_fold() {
        assert_eq!(
            fp("SELECT a FROM t WHERE id IN (1, 2, 3)").1,
            "SELECT a FROM t WHERE id IN (?)"
        );
        assert_eq!(
            fp("SELECT a FROM t WHERE id IN (4)").1,
            "SELECT a FROM t WHERE id IN (?)"
        );
        assert_eq!(
            fp("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')").1,
            "INSERT INTO t(a, b) VALUES (?)"
        );
        assert_eq!(fp("SELECT count(*) FROM t").1, "SELECT count(*) FROM t");
    }

    #[test]
    fn signs_comments_placeholders() {
        assert_eq!(
            fp("SELECT a FROM t WHERE x = -5 /* hint */ -- tail").1,
            "SELECT a FROM t WHERE x = ?"
        );
        assert_eq!(fp("SELECT a - 5 FROM t").1, "SELECT a - ? FROM t");
        let pg = fingerprint("SELECT * FROM t WHERE a = $1 AND b = $2", true);
        assert_eq!(pg.text, "SELECT * FROM t WHERE a = ? AND b = ?");
        // In PostgreSQL "x" is an identifier, not a string.
        assert_eq!(
            fingerprint("SELECT \"Name\" FROM t", true).text,
            "SELECT \"Name\" FROM t"
        );
    }

    #[test]
    fn operations() {
        assert_eq!(fp("WITH x AS (SELECT 1) UPDATE t SET a = 1").0, "UPDATE");
        assert_eq!(fp("begin").0, "BEGIN");
        assert_eq!(fp("(SELECT 1) UNION (SELECT 2)").0, "SELECT");
        assert_eq!(fp("").0, "OTHER");
    }

    #[test]
    fn trailing_terminators_do_not_count() {
        assert_eq!(fp("SELECT 1;").1, "SELECT ?");
        assert_eq!(fp("SELECT 1 ; ; ").1, "SELECT ?");
        assert_eq!(fp("SELECT 1; SELECT 2").1, "SELECT ?; SELECT ?");
    }

    #[test]
    fn a_statement_cut_inside_a_string_keeps_its_start() {
        let f = fingerprint("INSERT INTO t (a) VALUES ('unterminated str", false);
        assert_eq!(f.operation, "INSERT");
        assert!(f.text.starts_with("INSERT INTO t(a) VALUES"), "{}", f.text);
        assert!(f.text.ends_with('…'));
    }
}
