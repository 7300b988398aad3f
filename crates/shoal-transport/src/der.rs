//! Just enough DER to read the DNS names of an X.509 certificate's subjectAltName extension.
//!
//! It reads certificates that webpki has already verified against the cluster CA, but it is
//! written for hostile bytes all the same: every length is checked against what is left, nothing
//! is indexed without `get`, and a malformed certificate is an error, never a panic.

/// DER tag of a SEQUENCE.
const TAG_SEQUENCE: u8 = 0x30;
/// DER tag of an OBJECT IDENTIFIER.
const TAG_OID: u8 = 0x06;
/// DER tag of a BOOLEAN.
const TAG_BOOLEAN: u8 = 0x01;
/// DER tag of an OCTET STRING.
const TAG_OCTET_STRING: u8 = 0x04;
/// Tag of the `[3] EXPLICIT Extensions` field of a TBSCertificate.
const TAG_EXTENSIONS: u8 = 0xa3;
/// Tag of `dNSName [2] IA5String` in a GeneralName.
const TAG_DNS_NAME: u8 = 0x82;
/// The OID 2.5.29.17 (subjectAltName), content bytes only.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The certificate's bytes are not the DER this reader expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

/// The DNS names of the certificate's subjectAltName extension, in order; empty if it has none.
pub(crate) fn subject_alt_dns_names(cert: &[u8]) -> Result<Vec<String>, Malformed> {
    let certificate = Reader::new(cert).only(TAG_SEQUENCE, "certificate")?;
    let tbs = Reader::new(certificate).expect(TAG_SEQUENCE, "tbsCertificate")?;
    let mut fields = Reader::new(tbs);
    let mut names = Vec::new();
    while let Some((tag, content)) = fields.next()? {
        if tag != TAG_EXTENSIONS {
            continue;
        }
        let extensions = Reader::new(content).only(TAG_SEQUENCE, "extensions")?;
        let mut extensions = Reader::new(extensions);
        while let Some((tag, extension)) = extensions.next()? {
            if tag != TAG_SEQUENCE {
                return Err(Malformed("extension is not a sequence"));
            }
            let mut extension = Reader::new(extension);
            let oid = extension.expect(TAG_OID, "extension id")?;
            let mut value = extension.expect_any("extension value")?;
            if value.0 == TAG_BOOLEAN {
                value = extension.expect_any("extension value")?;
            }
            if value.0 != TAG_OCTET_STRING {
                return Err(Malformed("extension value is not an octet string"));
            }
            if oid == OID_SUBJECT_ALT_NAME {
                read_dns_names(value.1, &mut names)?;
            }
        }
    }
    Ok(names)
}

fn read_dns_names(general_names: &[u8], names: &mut Vec<String>) -> Result<(), Malformed> {
    let general_names = Reader::new(general_names).only(TAG_SEQUENCE, "subjectAltName")?;
    let mut general_names = Reader::new(general_names);
    while let Some((tag, content)) = general_names.next()? {
        if tag == TAG_DNS_NAME {
            let name = std::str::from_utf8(content)
                .ok()
                .filter(|s| s.is_ascii())
                .ok_or(Malformed("DNS name is not ASCII"))?;
            names.push(name.to_owned());
        }
    }
    Ok(())
}

/// Reads tag-length-value elements from a byte slice.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// The next element as (tag, content), or `None` at the end.
    fn next(&mut self) -> Result<Option<(u8, &'a [u8])>, Malformed> {
        let Some((&tag, rest)) = self.rest.split_first() else {
            return Ok(None);
        };
        if tag & 0x1f == 0x1f {
            return Err(Malformed("multi-byte tags are not used in certificates"));
        }
        let (&first, mut rest) = rest.split_first().ok_or(Malformed("missing length"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            // Long form: the low bits count the length bytes. DER forbids the indefinite form
            // (0x80), and no certificate needs more than four length bytes.
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return Err(Malformed("unsupported length form"));
            }
            let (bytes, after) = rest
                .split_at_checked(count)
                .ok_or(Malformed("truncated length"))?;
            rest = after;
            bytes
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b))
        };
        let (content, after) = rest
            .split_at_checked(len)
            .ok_or(Malformed("element longer than its container"))?;
        self.rest = after;
        Ok(Some((tag, content)))
    }

    fn expect_any(&mut self, what: &'static str) -> Result<(u8, &'a [u8]), Malformed> {
        self.next()?.ok_or(Malformed(what))
    }

    /// The next element's content, which must carry `tag`.
    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], Malformed> {
        match self.next()? {
            Some((t, content)) if t == tag => Ok(content),
            _ => Err(Malformed(what)),
        }
    }

    /// The content of the one element these bytes hold, which must carry `tag`.
    fn only(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], Malformed> {
        let content = self.expect(tag, what)?;
        if self.rest.is_empty() {
            Ok(content)
        } else {
            Err(Malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn self_signed(names: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_dns_names_rcgen_wrote() {
        let der = self_signed(&["n1.node.shoal", "node.shoal"]);
        assert_eq!(
            subject_alt_dns_names(&der).unwrap(),
            vec!["n1.node.shoal".to_owned(), "node.shoal".to_owned()]
        );
    }

    #[test]
    fn a_certificate_without_alt_names_has_no_dns_names() {
        assert!(subject_alt_dns_names(&self_signed(&[])).unwrap().is_empty());
    }

    #[test]
    fn truncated_certificates_are_errors_not_panics() {
        let der = self_signed(&["n1.node.shoal"]);
        for len in 0..der.len() {
            assert!(
                subject_alt_dns_names(&der[..len]).is_err(),
                "prefix of {len}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = subject_alt_dns_names(&bytes);
        }

        #[test]
        fn flipped_bytes_never_panic(index in 0usize..4096, bits in 1u8..=255) {
            let mut der = self_signed(&["c1.client.shoal"]);
            let i = index % der.len();
            der[i] ^= bits;
            let _ = subject_alt_dns_names(&der);
        }
    }
}
