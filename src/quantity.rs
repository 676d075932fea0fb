//! Exact conversion between Kubernetes resource quantities and byte counts.
//!
//! [`parse_bytes`] accepts the same grammar as Kubernetes'
//! `apimachinery` `resource.Quantity`:
//!
//! ```text
//! quantity        ::= signedNumber suffix
//! signedNumber    ::= ("+" | "-")? number
//! number          ::= digits | digits "." digits? | "." digits
//! suffix          ::= binarySI | decimalSI | decimalExponent
//! binarySI        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! decimalSI       ::= "" | n | u | m | k | M | G | T | P | E
//! decimalExponent ::= ("e" | "E") ("+" | "-")? digits
//! ```
//!
//! The suffix is *either* an SI suffix *or* an exponent, never both, so
//! `1e3k` is rejected. A bare `E` is the decimal suffix exa (10^18), not an
//! exponent: an exponent always has digits after the `e`/`E`.
//!
//! All arithmetic is exact integer arithmetic (no floating point): a value is
//! accepted only if it is a whole, non-negative number of bytes that fits in a
//! `u64`. Huge or tiny exponents such as `1e999999999` are handled in constant
//! time.

use thiserror::Error;

/// Binary SI suffixes and the power of two each one stands for.
const BINARY_SUFFIXES: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];

/// Decimal SI suffixes at or above one and the power of ten each stands for.
const DECIMAL_MULTIPLES: [(&str, u32); 6] = [
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// Decimal SI suffixes below one and the (negative) power of ten each stands for.
const DECIMAL_FRACTIONS: [(&str, i64); 3] = [("n", -9), ("u", -6), ("m", -3)];

// Reasons carried by `QuantityError::Malformed`.
const WHITESPACE: &str = "whitespace is not allowed";
const MISSING_NUMBER: &str = "it must start with a number, e.g. \"10Gi\"";
const EXTRA_SIGN: &str = "only one leading sign is allowed";
const EXTRA_POINT: &str = "a number has at most one decimal point";
const MISSING_EXPONENT_DIGITS: &str = "an exponent needs digits after the \"e\", e.g. \"1e9\"";
const UNKNOWN_SUFFIX: &str = "unknown suffix";

/// Why a string could not be converted to a byte count.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// The input was the empty string.
    #[error("an empty string is not a Kubernetes quantity (expected something like \"10Gi\")")]
    Empty,
    /// The input does not follow the Kubernetes quantity grammar.
    #[error("{value:?} is not a Kubernetes quantity: {}", describe_malformed(.value, .reason))]
    Malformed {
        /// The rejected input, verbatim.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The input is a valid quantity below zero.
    #[error("{value:?} is negative; a byte count cannot be negative")]
    Negative {
        /// The rejected input, verbatim.
        value: String,
    },
    /// The input is a valid quantity that is not a whole number of bytes.
    #[error("{value:?} is not a whole number of bytes")]
    FractionalBytes {
        /// The rejected input, verbatim.
        value: String,
    },
    /// The input is a valid quantity larger than `u64::MAX` bytes.
    #[error(
        "{value:?} is too large: at most 18446744073709551615 bytes (just under 16Ei) are supported"
    )]
    Overflow {
        /// The rejected input, verbatim.
        value: String,
    },
}

/// Renders the reason of a `Malformed` error, naming the offending suffix
/// and listing the valid ones when the suffix is unknown.
fn describe_malformed(value: &str, reason: &str) -> String {
    if reason == UNKNOWN_SUFFIX {
        format!(
            "{UNKNOWN_SUFFIX} {:?} (use one of Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E)",
            Lexed::new(value).suffix
        )
    } else {
        reason.to_owned()
    }
}

/// Converts a Kubernetes quantity such as `10Gi`, `1500M` or `1e9` to an exact
/// number of bytes.
///
/// # Errors
///
/// * [`QuantityError::Empty`] for `""`;
/// * [`QuantityError::Malformed`] for anything outside the Kubernetes grammar,
///   including whitespace and unknown suffixes such as `10GB` or `10K`;
/// * [`QuantityError::Negative`] for values below zero (`-0` is zero and fine);
/// * [`QuantityError::FractionalBytes`] for values that are not a whole
///   number of bytes, such as `1500m`;
/// * [`QuantityError::Overflow`] for values above `u64::MAX`, such as `16Ei`.
pub fn parse_bytes(s: &str) -> Result<u64, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let malformed = |reason| QuantityError::Malformed {
        value: s.to_owned(),
        reason,
    };
    if s.chars().any(char::is_whitespace) {
        return Err(malformed(WHITESPACE));
    }

    let lexed = Lexed::new(s);
    if lexed.integer.is_empty() && lexed.fraction.is_empty() {
        let double_sign = lexed.signed && lexed.suffix.starts_with(['+', '-']);
        return Err(malformed(if double_sign {
            EXTRA_SIGN
        } else {
            MISSING_NUMBER
        }));
    }
    if lexed.suffix.starts_with('.') {
        return Err(malformed(EXTRA_POINT));
    }
    let scale = Scale::parse(lexed.suffix).map_err(malformed)?;

    let magnitude = Decimal::new(lexed.integer, lexed.fraction, scale.power_of_ten);
    if magnitude.is_zero() {
        return Ok(0);
    }
    if lexed.negative {
        return Err(QuantityError::Negative {
            value: s.to_owned(),
        });
    }
    magnitude
        .into_bytes(scale.power_of_two)
        .map_err(|out_of_range| match out_of_range {
            OutOfRange::Fractional => QuantityError::FractionalBytes {
                value: s.to_owned(),
            },
            OutOfRange::Overflow => QuantityError::Overflow {
                value: s.to_owned(),
            },
        })
}

/// Formats a byte count as the shortest exact Kubernetes quantity.
///
/// Candidates are the plain digits, the largest binary suffix (`Ki` … `Ei`)
/// that divides `n` exactly and the largest decimal suffix (`k` … `E`) that
/// divides `n` exactly. The shortest candidate wins; on a tie binary beats
/// decimal. A suffixed form is never longer than the plain digits, so plain
/// digits are used only when no suffix divides `n`.
///
/// Examples: `0` → `"0"`, `1024` → `"1Ki"`, `10737418240` → `"10Gi"`,
/// `10000000000` → `"10G"`, `1500000000` → `"1500M"`, `1024000` → `"1024k"`,
/// `1536` → `"1536"`.
///
/// The result always round-trips: `parse_bytes(&format_bytes(n)) == Ok(n)`.
pub fn format_bytes(n: u64) -> String {
    let plain = n.to_string();
    if n == 0 {
        return plain;
    }
    let binary = BINARY_SUFFIXES
        .iter()
        .rev()
        .find(|&&(_, power)| n.is_multiple_of(1u64 << power))
        .map(|&(suffix, power)| format!("{}{suffix}", n >> power));
    let decimal = DECIMAL_MULTIPLES
        .iter()
        .rev()
        .find(|&&(_, power)| n.is_multiple_of(10u64.pow(power)))
        .map(|&(suffix, power)| format!("{}{suffix}", n / 10u64.pow(power)));
    // `min_by_key` returns the first of equally short candidates: binary.
    [binary, decimal]
        .into_iter()
        .flatten()
        .min_by_key(String::len)
        .unwrap_or(plain)
}

/// A quantity split into its lexical parts. Lexing never fails: validation
/// happens afterwards, on the parts.
struct Lexed<'a> {
    /// Whether a leading `+` or `-` was present.
    signed: bool,
    /// Whether the leading sign was `-`.
    negative: bool,
    /// ASCII digits before the decimal point (possibly empty).
    integer: &'a str,
    /// ASCII digits after the decimal point (empty if there is none).
    fraction: &'a str,
    /// Everything after the number.
    suffix: &'a str,
}

impl<'a> Lexed<'a> {
    fn new(s: &'a str) -> Self {
        let (signed, negative, rest) = match s.as_bytes().first() {
            Some(b'+') => (true, false, &s[1..]),
            Some(b'-') => (true, true, &s[1..]),
            _ => (false, false, s),
        };
        let (integer, rest) = split_digits(rest);
        let (fraction, suffix) = match rest.strip_prefix('.') {
            Some(after_point) => split_digits(after_point),
            None => ("", rest),
        };
        Self {
            signed,
            negative,
            integer,
            fraction,
            suffix,
        }
    }
}

/// Splits `s` into its leading ASCII digits and the rest.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s.split_at(end)
}

/// The multiplier a suffix stands for: `10^power_of_ten × 2^power_of_two`.
struct Scale {
    power_of_ten: i64,
    power_of_two: u32,
}

impl Scale {
    /// Interprets a suffix, returning a `Malformed` reason if it is invalid.
    fn parse(suffix: &str) -> Result<Self, &'static str> {
        let decimal = |power_of_ten| Self {
            power_of_ten,
            power_of_two: 0,
        };
        if suffix.is_empty() {
            return Ok(decimal(0));
        }
        if let Some(&(_, power_of_two)) = BINARY_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
            return Ok(Self {
                power_of_ten: 0,
                power_of_two,
            });
        }
        if let Some(&(_, power)) = DECIMAL_MULTIPLES.iter().find(|(s, _)| *s == suffix) {
            return Ok(decimal(i64::from(power)));
        }
        if let Some(&(_, power)) = DECIMAL_FRACTIONS.iter().find(|(s, _)| *s == suffix) {
            return Ok(decimal(power));
        }
        // A bare "E" (exa) was matched above, so this is an exponent or junk.
        if let Some(exponent) = suffix.strip_prefix(['e', 'E']) {
            let (negative, digits) = match exponent.as_bytes().first() {
                Some(b'+') => (false, &exponent[1..]),
                Some(b'-') => (true, &exponent[1..]),
                _ => (false, exponent),
            };
            if digits.is_empty() {
                return Err(MISSING_EXPONENT_DIGITS);
            }
            if digits.bytes().all(|b| b.is_ascii_digit()) {
                // Saturating is exact enough: anything near i64::MAX is far
                // beyond both the overflow and the fraction thresholds.
                let magnitude = digits.bytes().fold(0i64, |acc, b| {
                    acc.saturating_mul(10).saturating_add(i64::from(b - b'0'))
                });
                return Ok(decimal(if negative { -magnitude } else { magnitude }));
            }
        }
        Err(UNKNOWN_SUFFIX)
    }
}

/// Why an exact value is not representable as a `u64` byte count.
enum OutOfRange {
    Fractional,
    Overflow,
}

/// An exact non-negative decimal `digits × 10^exponent`.
///
/// `digits` holds one decimal digit (0–9) per element, most significant
/// first, with neither leading nor trailing zeros; it is empty for zero.
struct Decimal {
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    /// Builds the value `integer.fraction × 10^exponent` from ASCII digits.
    fn new(integer: &str, fraction: &str, exponent: i64) -> Self {
        let mut digits: Vec<u8> = integer
            .bytes()
            .chain(fraction.bytes())
            .map(|b| b - b'0')
            .skip_while(|&d| d == 0)
            .collect();
        let fraction_len = i64::try_from(fraction.len()).unwrap_or(i64::MAX);
        let mut exponent = exponent.saturating_sub(fraction_len);
        while digits.last() == Some(&0) {
            digits.pop();
            exponent = exponent.saturating_add(1);
        }
        Self { digits, exponent }
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Returns `self × 2^power_of_two` as an exact `u64`.
    fn into_bytes(mut self, power_of_two: u32) -> Result<u64, OutOfRange> {
        if self.is_zero() {
            return Ok(0);
        }
        let mut power_of_two = power_of_two;
        if self.exponent < 0 {
            // value = digits × 2^power_of_two / (2^k × 5^k). Because `digits`
            // is not a multiple of ten it cannot be divisible by both 2 and 5,
            // so the value can only be whole when k <= power_of_two and
            // 5^k divides `digits`; then value = (digits / 5^k) × 2^(p - k).
            let k = u32::try_from(self.exponent.unsigned_abs())
                .ok()
                .filter(|&k| k <= power_of_two)
                .ok_or(OutOfRange::Fractional)?;
            for _ in 0..k {
                if !self.divide_by_five() {
                    return Err(OutOfRange::Fractional);
                }
            }
            power_of_two -= k;
            self.exponent = 0;
        }
        // Now value = digits × 10^exponent × 2^power_of_two, exponent >= 0.
        // Twenty-one or more digits means at least 10^20 > u64::MAX.
        if self.digits.len() > 20 {
            return Err(OutOfRange::Overflow);
        }
        let mantissa = self
            .digits
            .iter()
            .fold(0u128, |acc, &d| acc * 10 + u128::from(d));
        let bytes = u32::try_from(self.exponent)
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
            .and_then(|scale| mantissa.checked_mul(scale))
            .and_then(|v| v.checked_mul(1u128 << power_of_two))
            .ok_or(OutOfRange::Overflow)?;
        u64::try_from(bytes).map_err(|_| OutOfRange::Overflow)
    }

    /// Divides `digits` by five in place (long division), returning whether
    /// the division was exact.
    fn divide_by_five(&mut self) -> bool {
        let mut remainder = 0u8;
        for digit in &mut self.digits {
            let current = remainder * 10 + *digit;
            *digit = current / 5;
            remainder = current % 5;
        }
        let leading_zeros = self.digits.iter().take_while(|&&d| d == 0).count();
        self.digits.drain(..leading_zeros);
        remainder == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KI: u64 = 1 << 10;
    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;
    const TI: u64 = 1 << 40;
    const PI: u64 = 1 << 50;
    const EI: u64 = 1 << 60;

    #[test]
    fn accepts_valid_quantities() {
        let cases: &[(&str, u64)] = &[
            // Plain numbers and signs.
            ("0", 0),
            ("-0", 0),
            ("+0", 0),
            ("0.0", 0),
            ("-0.000Gi", 0),
            ("-.0e5", 0),
            ("00010", 10),
            ("5.", 5),
            ("1", 1),
            ("18446744073709551615", u64::MAX),
            ("+10G", 10_000_000_000),
            // Decimal SI.
            ("1k", 1_000),
            ("1M", 1_000_000),
            ("1G", 1_000_000_000),
            ("10G", 10_000_000_000),
            ("1500M", 1_500_000_000),
            ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000), // exa, not an exponent
            ("18E", 18_000_000_000_000_000_000),
            ("18.446744073709551615E", u64::MAX),
            ("2000m", 2),
            ("18446744073709551615000m", u64::MAX),
            ("1000000u", 1),
            ("1000000000n", 1),
            // Binary SI.
            ("1Ki", KI),
            ("1Mi", MI),
            ("500Mi", 524_288_000),
            ("1Gi", GI),
            ("10Gi", 10_737_418_240),
            ("1.5Gi", 1_610_612_736),
            (".5Ki", 512),
            ("+.5Ki", 512),
            ("1Ti", TI),
            ("1Pi", PI),
            ("1Ei", 1_152_921_504_606_846_976),
            ("15Ei", 15 * EI),
            (
                "0.000000000000000000867361737988403547205962240695953369140625Ei",
                1,
            ),
            (
                "15.999999999999999999132638262011596452794037759304046630859375Ei",
                u64::MAX,
            ),
            // Decimal exponents.
            ("1e3", 1_000),
            ("1E3", 1_000),
            ("1e+3", 1_000),
            ("1.e3", 1_000),
            ("1e0", 1),
            ("1e-0", 1),
            ("100e-2", 1),
            ("0.0001e4", 1),
            ("1e19", 10_000_000_000_000_000_000),
            (
                "0.00000000000000000000000000000000000000001e60",
                10_000_000_000_000_000_000,
            ),
            ("0e999999999", 0),
            ("0e-999999999", 0),
        ];
        for &(input, expected) in cases {
            assert_eq!(parse_bytes(input), Ok(expected), "input {input:?}");
        }
    }

    /// The expected error for a rejected input, minus the input itself.
    #[derive(Debug, Clone, Copy)]
    enum Expect {
        Empty,
        Malformed(&'static str),
        Negative,
        Fractional,
        Overflow,
    }

    impl Expect {
        fn error(self, input: &str) -> QuantityError {
            let value = input.to_owned();
            match self {
                Expect::Empty => QuantityError::Empty,
                Expect::Malformed(reason) => QuantityError::Malformed { value, reason },
                Expect::Negative => QuantityError::Negative { value },
                Expect::Fractional => QuantityError::FractionalBytes { value },
                Expect::Overflow => QuantityError::Overflow { value },
            }
        }
    }

    #[test]
    fn rejects_invalid_quantities() {
        use Expect::*;
        let forty_digits = "1234567890123456789012345678901234567890";
        let cases: &[(&str, Expect)] = &[
            ("", Empty),
            // Whitespace anywhere.
            (" 10G", Malformed(WHITESPACE)),
            ("10G ", Malformed(WHITESPACE)),
            ("10 G", Malformed(WHITESPACE)),
            ("\t1", Malformed(WHITESPACE)),
            ("1\n", Malformed(WHITESPACE)),
            (" ", Malformed(WHITESPACE)),
            // Missing or broken numbers.
            ("G", Malformed(MISSING_NUMBER)),
            ("Ki", Malformed(MISSING_NUMBER)),
            (".", Malformed(MISSING_NUMBER)),
            ("+", Malformed(MISSING_NUMBER)),
            ("-", Malformed(MISSING_NUMBER)),
            ("-G", Malformed(MISSING_NUMBER)),
            ("e3", Malformed(MISSING_NUMBER)),
            ("١", Malformed(MISSING_NUMBER)), // non-ASCII digit
            ("--1", Malformed(EXTRA_SIGN)),
            ("+-1", Malformed(EXTRA_SIGN)),
            ("1.2.3", Malformed(EXTRA_POINT)),
            ("1..2", Malformed(EXTRA_POINT)),
            // Exponents without digits.
            ("1e", Malformed(MISSING_EXPONENT_DIGITS)),
            ("1e+", Malformed(MISSING_EXPONENT_DIGITS)),
            ("1e-", Malformed(MISSING_EXPONENT_DIGITS)),
            ("1E+", Malformed(MISSING_EXPONENT_DIGITS)),
            // Unknown suffixes.
            ("10GB", Malformed(UNKNOWN_SUFFIX)),
            ("10g", Malformed(UNKNOWN_SUFFIX)),
            ("10K", Malformed(UNKNOWN_SUFFIX)),
            ("10KiB", Malformed(UNKNOWN_SUFFIX)),
            ("1ki", Malformed(UNKNOWN_SUFFIX)),
            ("1KI", Malformed(UNKNOWN_SUFFIX)),
            ("1b", Malformed(UNKNOWN_SUFFIX)),
            ("0x10", Malformed(UNKNOWN_SUFFIX)),
            ("1e-3k", Malformed(UNKNOWN_SUFFIX)),
            ("1e3Ki", Malformed(UNKNOWN_SUFFIX)),
            ("1e3.5", Malformed(UNKNOWN_SUFFIX)),
            ("1e--3", Malformed(UNKNOWN_SUFFIX)),
            ("1kk", Malformed(UNKNOWN_SUFFIX)),
            ("1-", Malformed(UNKNOWN_SUFFIX)),
            // Negative values.
            ("-1", Negative),
            ("-1Ki", Negative),
            ("-0.5", Negative),
            ("-1500m", Negative),
            ("-1e999999999", Negative),
            // Not a whole number of bytes.
            ("1500m", Fractional),
            ("1m", Fractional),
            ("1n", Fractional),
            ("0.5", Fractional),
            ("1.5", Fractional),
            ("1e-1", Fractional),
            (".1Ki", Fractional),
            ("1.0000000001Ki", Fractional),
            ("0.0000000000000000001Ei", Fractional),
            ("1e-999999999", Fractional),
            ("1e-99999999999999999999999", Fractional),
            ("18446744073709551615.5", Fractional),
            // Larger than u64::MAX.
            ("18446744073709551616", Overflow),
            (forty_digits, Overflow),
            ("16Ei", Overflow),
            ("17Ei", Overflow),
            ("19E", Overflow),
            ("18446744073709551616000m", Overflow),
            ("1e20", Overflow),
            ("1e999999999", Overflow),
            ("1e99999999999999999999999", Overflow),
            ("0.00000000000000000000000000000000000000001e61", Overflow),
        ];
        for &(input, expect) in cases {
            assert_eq!(
                parse_bytes(input),
                Err(expect.error(input)),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn error_messages_quote_the_value() {
        let message = |input: &str| parse_bytes(input).unwrap_err().to_string();
        assert_eq!(
            message("10GB"),
            "\"10GB\" is not a Kubernetes quantity: unknown suffix \"GB\" \
             (use one of Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E)"
        );
        assert_eq!(
            message("10 G"),
            "\"10 G\" is not a Kubernetes quantity: whitespace is not allowed"
        );
        assert_eq!(
            message("-1Gi"),
            "\"-1Gi\" is negative; a byte count cannot be negative"
        );
        assert_eq!(message("1500m"), "\"1500m\" is not a whole number of bytes");
        assert!(message("16Ei").starts_with("\"16Ei\" is too large"));
        assert!(message("").contains("empty"));
    }

    #[test]
    fn formats_with_the_shortest_exact_suffix() {
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (1, "1"),
            (999, "999"),
            (1_000, "1k"),
            (1_024, "1Ki"),
            (1_536, "1536"),
            (1_024_000, "1024k"),
            (2_048_000, "2048k"),
            (10_112_000, "9875Ki"), // tie with "10112k": binary wins
            (524_288_000, "500Mi"),
            (1_500_000_000, "1500M"),
            (10_000_000_000, "10G"),
            (10_737_418_240, "10Gi"),
            (1_000_000_000_000_000_000, "1E"),
            (EI, "1Ei"),
            (15 * EI, "15Ei"),
            (u64::MAX, "18446744073709551615"),
        ];
        for &(n, expected) in cases {
            assert_eq!(format_bytes(n), expected, "n = {n}");
        }
    }

    #[test]
    fn format_round_trips() {
        let mut values = vec![
            0,
            1,
            2,
            999,
            1_000,
            1_023,
            1_024,
            1_536,
            u64::MAX,
            u64::MAX - 1,
        ];
        values.extend((0..64).map(|shift| 1u64 << shift));
        values.extend((0..64).map(|shift| (1u64 << shift) - 1));
        values.extend((0..20).map(|power| 10u64.pow(power)));
        for multiplier in 1..=20u64 {
            values.extend((0..=6).filter_map(|k| multiplier.checked_mul(KI.pow(k))));
            values.extend((0..=6).filter_map(|k| multiplier.checked_mul(1_000u64.pow(k))));
        }
        // A deterministic pseudo-random spread (64-bit LCG).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..1_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            values.push(state);
            values.push(state >> (state % 64));
            values.push((state % 1_000) << (state % 54));
        }
        for n in values {
            let formatted = format_bytes(n);
            assert_eq!(
                parse_bytes(&formatted),
                Ok(n),
                "{n} formatted as {formatted:?}"
            );
            assert!(formatted.len() <= n.to_string().len(), "{n} -> {formatted}");
        }
    }
}
