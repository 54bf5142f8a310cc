//! A commit's OpenPGP signature, read the way `git verify-commit` reads it:
//! from the raw commit object's headers, where exactly one `gpgsig` header
//! must hold it. The signed payload is the object without that header. A
//! signature anywhere else (the message, a second header, `gpgsig-sha256`)
//! makes the commit unreadable, never signed.

use std::time::SystemTime;

use git2::{Oid, Repository};

/// A commit's signature and the bytes it signs.
pub struct Signed {
    pub signature: Vec<u8>,
    pub payload: Vec<u8>,
}

/// `Ok(None)` for an unsigned commit; `Err` for one whose signature headers
/// are ambiguous.
pub fn of_commit(git: &Repository, oid: Oid) -> Result<Option<Signed>, String> {
    let odb = git.odb().map_err(|e| e.to_string())?;
    let object = odb.read(oid).map_err(|e| e.to_string())?;
    if object.kind() != git2::ObjectType::Commit {
        return Err(format!("{oid} is not a commit"));
    }
    split(object.data())
}

/// Splits a raw commit object into its `gpgsig` value and the rest.
pub fn split(raw: &[u8]) -> Result<Option<Signed>, String> {
    let header_end = raw.windows(2).position(|w| w == b"\n\n").map_or(raw.len(), |i| i + 1);
    let (headers, body) = raw.split_at(header_end);
    let mut payload = Vec::with_capacity(raw.len());
    let mut signature: Option<Vec<u8>> = None;
    let mut count = 0;
    let mut in_sig = false;
    for line in headers.split_inclusive(|b| *b == b'\n') {
        if let Some(cont) = line.strip_prefix(b" ") {
            if in_sig {
                signature.as_mut().expect("in a signature").extend_from_slice(cont);
            } else {
                payload.extend_from_slice(line);
            }
            continue;
        }
        in_sig = false;
        let name = line.split(|b| *b == b' ' || *b == b'\n').next().unwrap_or_default();
        match name {
            b"gpgsig" => {
                count += 1;
                in_sig = true;
                signature = Some(line[name.len()..].strip_prefix(b" ").unwrap_or_default().to_vec());
            }
            b"gpgsig-sha256" => return Err("it carries a gpgsig-sha256 header, which kaws does not accept".into()),
            _ => payload.extend_from_slice(line),
        }
    }
    payload.extend_from_slice(body);
    match (count, signature) {
        (0, _) => Ok(None),
        (1, Some(signature)) => Ok(Some(Signed { signature, payload })),
        (n, _) => Err(format!("it carries {n} gpgsig headers; git verify-commit reads exactly one")),
    }
}

/// The creation time a signature claims (the signer chooses it), as unix
/// seconds; 0 when it claims none.
pub fn claimed_unix(signature: &[u8]) -> u64 {
    use sequoia_openpgp::parse::Parse;
    match sequoia_openpgp::Packet::from_bytes(signature) {
        Ok(sequoia_openpgp::Packet::Signature(s)) => s.signature_creation_time().map_or(0, unix),
        _ => 0,
    }
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: &[u8] = b"tree 1\nparent 2\nauthor a <a> 1 +0000\ncommitter a <a> 1 +0000\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n abc\n -----END PGP SIGNATURE-----\n\nmessage\n";

    #[test]
    fn the_one_gpgsig_header_is_the_signature_and_the_rest_is_signed() {
        let s = split(SIGNED).unwrap().unwrap();
        assert_eq!(s.signature, b"-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n");
        assert_eq!(s.payload, b"tree 1\nparent 2\nauthor a <a> 1 +0000\ncommitter a <a> 1 +0000\n\nmessage\n");
    }

    #[test]
    fn signatures_outside_one_header_are_refused_or_ignored() {
        // Two headers: refused.
        let at = SIGNED.windows(6).position(|w| w == b"gpgsig").unwrap();
        let with = |h: &[u8]| [&SIGNED[..at], h, &SIGNED[at..]].concat();
        assert!(split(&with(b"gpgsig x\n")).is_err());
        assert!(split(&with(b"gpgsig-sha256 x\n")).is_err());
        // A signature block in the message signs nothing.
        let in_message = b"tree 1\nauthor a <a> 1 +0000\n\nmsg\ngpgsig -----BEGIN PGP SIGNATURE-----\n x\n";
        assert!(split(in_message).unwrap().is_none());
    }
}
