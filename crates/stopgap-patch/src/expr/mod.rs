//! The `when` expression language: lexer, parser, evaluator and literal extraction.
//!
//! ```text
//! expr     := and ("or" and)*
//! and      := unary ("and" unary)*
//! unary    := "not" unary | compare
//! compare  := operand [op operand]
//! op       := == | != | ~ | !~ | < | <= | > | >= | contains | starts_with | ends_with | in
//! operand  := field | func "(" operand ")" | string | r"raw" | number | true | false
//!           | "[" literal ("," literal)* "]" | "(" expr ")"
//! field    := "http" "." ("request" | "response") "." name [ "(" string ")" ]
//! ```
//!
//! Fields are multi-valued (a request may carry a header twice): a comparison holds when **any**
//! value satisfies it. `not` negates the whole comparison. Regexes are linear-time
//! (`regex::bytes`), compiled when the patch loads.

mod ast;
pub mod content;
pub(crate) mod eval;
mod lexer;
mod parser;
pub mod transform;

pub use ast::{CmpOp, Expr, Field, FieldKind, Func, Operand, Span};
pub use eval::{CommandView, Derived, Evidence, HttpView};
pub use parser::{parse, ParseError, MAX_REGEX_SIZE};
