//! Field formulas: `+ - * /`, parentheses, `sqrt(…)`, numbers and field keys, e.g.
//! `current_kwh + previous_kwh`. Parsed once when the driver loads.

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    Field(String),
    Neg(Box<Expr>),
    Sqrt(Box<Expr>),
    Binary(Box<Expr>, char, Box<Expr>),
}

impl Expr {
    pub fn parse(text: &str) -> Result<Expr, String> {
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens, pos: 0 };
        let e = p.sum()?;
        if p.pos != p.tokens.len() {
            return Err(format!(
                "unexpected {:?} in formula {text:?}",
                p.tokens[p.pos]
            ));
        }
        Ok(e)
    }

    /// Evaluates with `lookup` giving field values; `None` if a field has none.
    pub fn eval(&self, lookup: &dyn Fn(&str) -> Option<f64>) -> Option<f64> {
        Some(match self {
            Expr::Number(n) => *n,
            Expr::Field(f) => lookup(f)?,
            Expr::Neg(e) => -e.eval(lookup)?,
            Expr::Sqrt(e) => e.eval(lookup)?.sqrt(),
            Expr::Binary(a, op, b) => {
                let (a, b) = (a.eval(lookup)?, b.eval(lookup)?);
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ => a / b,
                }
            }
        })
    }

    /// Field keys the formula reads.
    pub fn fields(&self, out: &mut Vec<String>) {
        match self {
            Expr::Number(_) => {}
            Expr::Field(f) => out.push(f.clone()),
            Expr::Neg(e) | Expr::Sqrt(e) => e.fields(out),
            Expr::Binary(a, _, b) => {
                a.fields(out);
                b.fields(out);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    Op(char),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if "+-*/()".contains(c) {
            out.push(Token::Op(c));
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            out.push(Token::Number(
                s.parse()
                    .map_err(|_| format!("bad number {s:?} in formula"))?,
            ));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Name(chars[start..i].iter().collect()));
        } else {
            return Err(format!("unexpected character {c:?} in formula {text:?}"));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek_op(&self) -> Option<char> {
        match self.tokens.get(self.pos) {
            Some(Token::Op(c)) => Some(*c),
            _ => None,
        }
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut e = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek_op() {
            self.pos += 1;
            e = Expr::Binary(Box::new(e), op, Box::new(self.product()?));
        }
        Ok(e)
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut e = self.atom()?;
        while let Some(op @ ('*' | '/')) = self.peek_op() {
            self.pos += 1;
            e = Expr::Binary(Box::new(e), op, Box::new(self.atom()?));
        }
        Ok(e)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        match t {
            Some(Token::Number(n)) => Ok(Expr::Number(n)),
            Some(Token::Name(n)) if n == "sqrt" && self.peek_op() == Some('(') => {
                self.pos += 1;
                let e = self.sum()?;
                if self.peek_op() != Some(')') {
                    return Err("missing ) after sqrt( in formula".into());
                }
                self.pos += 1;
                Ok(Expr::Sqrt(Box::new(e)))
            }
            Some(Token::Name(n)) => Ok(Expr::Field(n)),
            Some(Token::Op('-')) => Ok(Expr::Neg(Box::new(self.atom()?))),
            Some(Token::Op('(')) => {
                let e = self.sum()?;
                if self.peek_op() != Some(')') {
                    return Err("missing ) in formula".into());
                }
                self.pos += 1;
                Ok(e)
            }
            other => Err(format!(
                "formula ends early or has {other:?} where a value belongs"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_and_fields() {
        let e = Expr::parse("current_kwh + previous_kwh * 2 - (a - 1) / 2").unwrap();
        let v = e.eval(&|f| match f {
            "current_kwh" => Some(1.0),
            "previous_kwh" => Some(2.0),
            "a" => Some(5.0),
            _ => None,
        });
        assert_eq!(v, Some(1.0 + 4.0 - 2.0));
        assert_eq!(e.eval(&|_| None), None);
        assert_eq!(Expr::parse("-x").unwrap().eval(&|_| Some(3.0)), Some(-3.0));
        assert_eq!(
            Expr::parse("sqrt(a * a + b * b)")
                .unwrap()
                .eval(&|f| match f {
                    "a" => Some(3.0),
                    _ => Some(4.0),
                }),
            Some(5.0)
        );
    }

    #[test]
    fn errors() {
        assert!(Expr::parse("a +").is_err());
        assert!(Expr::parse("(a").is_err());
        assert!(Expr::parse("a $ b").is_err());
        assert!(Expr::parse("a b").is_err());
    }
}
