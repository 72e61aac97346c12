//! age's hybrid post-quantum recipient type `mlkem768x25519`
//! (<https://c2sp.org/age>, "The MLKEM768-X25519 hybrid post-quantum
//! recipient type"): `age1pq1…` recipients, `AGE-SECRET-KEY-PQ-1…`
//! identities, plugged into the age crate through its [`age::Recipient`] and
//! [`age::Identity`] traits.
//!
//! Why it lives here: age 0.12.1 ships only the encrypt-only tagged types
//! (`age1tag1…`, `age1tagpq1…`); its native `mlkem768x25519` type is not
//! released yet. The released `hpke` 0.14 / `x-wing` 0.1 crates carry the
//! same KEM, but they need `kem` 0.3.0 while age 0.12.1 pins `kem`
//! 0.3.0-pre.0, so the two cannot share one `Cargo.lock`. This module
//! therefore uses exactly the crates age 0.12.1 already links, the way its
//! own `mlkem768p256tag` type does:
//!
//! * HPKE (RFC 9180) base mode, HKDF-SHA256, ChaCha20Poly1305: `hpke` 0.12
//!   through age-core's `hpke_seal` / `hpke_open`;
//! * the KEM, MLKEM768-X25519 (KEM id 0x647a, draft-ietf-hpke-pq-03, which is
//!   X-Wing, draft-connolly-cfrg-xwing-kem): RustCrypto `ml-kem` (FIPS 203),
//!   `x25519-dalek` (RFC 7748) and `sha3` (SHAKE256 key expansion, SHA3-256
//!   combiner). The only code written here is the combiner's one hash, the
//!   key expansion and the stanza encoding the age spec describes.
//!
//! Every C2SP CCTV `hybrid*` vector runs against this module
//! (`tests/it/cctv.rs`), and typage decrypts what it encrypts and vice versa
//! (`tests/it/pq.rs`). Replace it with age's own type once a release has one.

use std::collections::HashSet;
use std::fmt;

use age::secrecy::{ExposeSecret, SecretString};
use age_core::format::{FileKey, Stanza};
use age_core::primitives::{bech32_decode, bech32_encode, hpke_open, hpke_seal};
use base64::{prelude::BASE64_STANDARD_NO_PAD, Engine};
use hpke::{Deserializable, Serializable};
use zeroize::{Zeroize, Zeroizing};

/// The stanza's first argument (c2sp.org/age, "mlkem768x25519 recipient stanza").
pub const STANZA_TAG: &str = "mlkem768x25519";
/// HPKE `info`.
const INFO: &[u8] = b"age-encryption.org/mlkem768x25519";
/// The label age's post-quantum recipients share; age's encryptor refuses to
/// combine recipients whose label sets differ, so a PQ recipient cannot be
/// mixed with a classic one (the spec's "SHOULD NOT be encrypted to both").
pub const LABEL_POSTQUANTUM: &str = "postquantum";
/// Bech32 HRP of a recipient.
pub const RECIPIENT_HRP: &str = "age1pq";
/// Bech32 HRP of an identity (upper case, as written in identity files).
pub const IDENTITY_HRP: &str = "AGE-SECRET-KEY-PQ-";
const RECIPIENT_PREFIX: bech32::Hrp = bech32::Hrp::parse_unchecked(RECIPIENT_HRP);
const IDENTITY_PREFIX: bech32::Hrp = bech32::Hrp::parse_unchecked(IDENTITY_HRP);

/// Length of the encapsulated key *enc*: ML-KEM-768 ciphertext (1088) ‖
/// X25519 ephemeral share (32).
pub const ENC_LEN: usize = 1120;
/// Length of a recipient: ML-KEM-768 encapsulation key (1184) ‖ X25519
/// public key (32).
pub const RECIPIENT_LEN: usize = 1216;
/// 16-byte file key + 16-byte Poly1305 tag.
const BODY_LEN: usize = 32;

type Kem = kem::MlKem768X25519;

/// The KEM MLKEM768-X25519 as an `hpke` 0.12 KEM.
mod kem {
    use hpke::generic_array::typenum::{Unsigned, U1024, U192, U32, U96};
    use hpke::generic_array::GenericArray;
    use hpke::kem::SharedSecret;
    use hpke::rand_core::{CryptoRng, RngCore};
    use hpke::{Deserializable, HpkeError, Serializable};
    use ml_kem::kem::{Decapsulate, Encapsulate};
    use ml_kem::{EncodedSizeUser, KemCore, MlKem768};
    use sha3::digest::{ExtendableOutput, Update, XofReader};
    use sha3::{Digest, Sha3_256, Shake256};
    use x25519_dalek::{PublicKey as XPublic, StaticSecret};
    use zeroize::{Zeroize, Zeroizing};

    /// X-Wing's combiner label `\.//^\` (draft-connolly-cfrg-xwing-kem §5.3).
    const XWING_LABEL: &[u8; 6] = br"\.//^\";
    const MLKEM_EK_LEN: usize = 1184;
    const MLKEM_CT_LEN: usize = 1088;

    type DecapKey = <MlKem768 as KemCore>::DecapsulationKey;
    type EncapKey = <MlKem768 as KemCore>::EncapsulationKey;

    /// The 32-byte seed and the keys expanded from it.
    #[derive(Clone)]
    pub struct PrivateKey {
        seed: Zeroizing<[u8; 32]>,
        dk_m: DecapKey,
        sk_x: StaticSecret,
        pk: PublicKey,
    }

    impl PartialEq for PrivateKey {
        fn eq(&self, other: &Self) -> bool {
            use subtle::ConstantTimeEq;
            self.seed.ct_eq(&other.seed[..]).into()
        }
    }
    impl Eq for PrivateKey {}

    impl PrivateKey {
        /// expandDecapsulationKey: SHAKE256(seed, 96) = ML-KEM d ‖ z ‖ X25519
        /// secret.
        pub fn from_seed(seed: [u8; 32]) -> Self {
            let mut expanded = Zeroizing::new([0u8; 96]);
            let mut xof = Shake256::default();
            xof.update(&seed);
            xof.finalize_xof().read(&mut expanded[..]);
            let mut d = [0u8; 32];
            let mut z = [0u8; 32];
            let mut x = [0u8; 32];
            d.copy_from_slice(&expanded[..32]);
            z.copy_from_slice(&expanded[32..64]);
            x.copy_from_slice(&expanded[64..]);
            let (dk_m, ek_m) = MlKem768::generate_deterministic(&d.into(), &z.into());
            let sk_x = StaticSecret::from(x);
            d.zeroize();
            z.zeroize();
            x.zeroize();
            let pk_x = XPublic::from(&sk_x);
            PrivateKey {
                seed: Zeroizing::new(seed),
                dk_m,
                sk_x,
                pk: PublicKey { ek_m, pk_x },
            }
        }

        pub fn seed(&self) -> &[u8; 32] {
            &self.seed
        }
    }

    impl Serializable for PrivateKey {
        type OutputSize = U32;
        fn write_exact(&self, buf: &mut [u8]) {
            buf.copy_from_slice(&self.seed[..]);
        }
    }

    impl Deserializable for PrivateKey {
        fn from_bytes(encoded: &[u8]) -> Result<Self, HpkeError> {
            let seed: [u8; 32] = encoded
                .try_into()
                .map_err(|_| HpkeError::IncorrectInputLength(32, encoded.len()))?;
            Ok(Self::from_seed(seed))
        }
    }

    /// ML-KEM-768 encapsulation key ‖ X25519 public key.
    #[derive(Clone, Debug, PartialEq)]
    pub struct PublicKey {
        ek_m: EncapKey,
        pk_x: XPublic,
    }
    impl Eq for PublicKey {}

    impl Serializable for PublicKey {
        type OutputSize = hpke::generic_array::typenum::Sum<U1024, U192>;
        fn write_exact(&self, buf: &mut [u8]) {
            buf[..MLKEM_EK_LEN].copy_from_slice(&self.ek_m.as_bytes());
            buf[MLKEM_EK_LEN..].copy_from_slice(self.pk_x.as_bytes());
        }
    }

    impl Deserializable for PublicKey {
        fn from_bytes(encoded: &[u8]) -> Result<Self, HpkeError> {
            let want = <Self as Serializable>::OutputSize::to_usize();
            if encoded.len() != want {
                return Err(HpkeError::IncorrectInputLength(want, encoded.len()));
            }
            let (m, x) = encoded.split_at(MLKEM_EK_LEN);
            let ek_m = EncapKey::from_bytes(m.try_into().expect("length checked above"));
            // FIPS 203 §7.2 input check: every coefficient must already be
            // reduced mod q, i.e. decoding then encoding is the identity.
            if ek_m.as_bytes()[..] != *m {
                return Err(HpkeError::ValidationError);
            }
            let x: [u8; 32] = x.try_into().expect("length checked above");
            Ok(PublicKey {
                ek_m,
                pk_x: XPublic::from(x),
            })
        }
    }

    /// ML-KEM-768 ciphertext ‖ X25519 ephemeral share.
    #[derive(Clone)]
    pub struct EncappedKey {
        ct_m: ml_kem::Ciphertext<MlKem768>,
        ct_x: [u8; 32],
    }

    impl Serializable for EncappedKey {
        type OutputSize = hpke::generic_array::typenum::Sum<U1024, U96>;
        fn write_exact(&self, buf: &mut [u8]) {
            buf[..MLKEM_CT_LEN].copy_from_slice(&self.ct_m);
            buf[MLKEM_CT_LEN..].copy_from_slice(&self.ct_x);
        }
    }

    impl Deserializable for EncappedKey {
        fn from_bytes(encoded: &[u8]) -> Result<Self, HpkeError> {
            let want = <Self as Serializable>::OutputSize::to_usize();
            if encoded.len() != want {
                return Err(HpkeError::IncorrectInputLength(want, encoded.len()));
            }
            let (m, x) = encoded.split_at(MLKEM_CT_LEN);
            let ct_m = <[u8; MLKEM_CT_LEN]>::try_from(m)
                .expect("length checked above")
                .into();
            Ok(EncappedKey {
                ct_m,
                ct_x: x.try_into().expect("length checked above"),
            })
        }
    }

    /// The X-Wing combiner: SHA3-256(ss_M ‖ ss_X ‖ ct_X ‖ pk_X ‖ label).
    fn combine(ss_m: &[u8], ss_x: &[u8], ct_x: &[u8], pk_x: &[u8]) -> GenericArray<u8, U32> {
        let mut h = Sha3_256::new();
        Digest::update(&mut h, ss_m);
        Digest::update(&mut h, ss_x);
        Digest::update(&mut h, ct_x);
        Digest::update(&mut h, pk_x);
        Digest::update(&mut h, XWING_LABEL);
        GenericArray::clone_from_slice(&h.finalize())
    }

    /// An X25519 result of all zeros means a low-order (or identity) share;
    /// the age spec and Go's implementation refuse it, and so does CCTV
    /// (`hybrid_identity`, `hybrid_low_order`: header failure).
    fn all_zero(b: &[u8; 32]) -> bool {
        use subtle::ConstantTimeEq;
        b.ct_eq(&[0u8; 32]).into()
    }

    /// MLKEM768-X25519, HPKE KEM id 0x647a.
    pub struct MlKem768X25519;

    impl hpke::Kem for MlKem768X25519 {
        type PublicKey = PublicKey;
        type PrivateKey = PrivateKey;
        type EncappedKey = EncappedKey;
        type NSecret = U32;
        const KEM_ID: u16 = 0x647a;

        fn sk_to_pk(sk: &PrivateKey) -> PublicKey {
            sk.pk.clone()
        }

        /// draft-ietf-hpke-pq-03 §4: seed = SHAKE256.LabeledDerive(ikm,
        /// "DeriveKeyPair", "", 32). age never calls this (identities are 32
        /// random bytes); it exists because the trait requires it.
        fn derive_keypair(ikm: &[u8]) -> (PrivateKey, PublicKey) {
            let label = b"DeriveKeyPair";
            let mut seed = [0u8; 32];
            let mut xof = Shake256::default();
            xof.update(ikm);
            xof.update(b"HPKE-v1");
            xof.update(b"KEM");
            xof.update(&Self::KEM_ID.to_be_bytes());
            xof.update(&(label.len() as u16).to_be_bytes());
            xof.update(label);
            xof.update(&32u16.to_be_bytes());
            xof.finalize_xof().read(&mut seed);
            let sk = PrivateKey::from_seed(seed);
            seed.zeroize();
            let pk = sk.pk.clone();
            (sk, pk)
        }

        fn decap(
            sk: &PrivateKey,
            pk_sender_id: Option<&PublicKey>,
            enc: &EncappedKey,
        ) -> Result<SharedSecret<Self>, HpkeError> {
            // Base mode only: age never authenticates the sender.
            if pk_sender_id.is_some() {
                return Err(HpkeError::DecapError);
            }
            let ss_m = sk
                .dk_m
                .decapsulate(&enc.ct_m)
                .map_err(|()| HpkeError::DecapError)?;
            let ss_x = sk.sk_x.diffie_hellman(&XPublic::from(enc.ct_x));
            if all_zero(ss_x.as_bytes()) {
                return Err(HpkeError::DecapError);
            }
            Ok(SharedSecret(combine(
                &ss_m,
                ss_x.as_bytes(),
                &enc.ct_x,
                sk.pk.pk_x.as_bytes(),
            )))
        }

        fn encap<R: CryptoRng + RngCore>(
            pk: &PublicKey,
            sender_id_keypair: Option<(&PrivateKey, &PublicKey)>,
            rng: &mut R,
        ) -> Result<(SharedSecret<Self>, EncappedKey), HpkeError> {
            if sender_id_keypair.is_some() {
                return Err(HpkeError::EncapError);
            }
            let (ct_m, ss_m) = pk
                .ek_m
                .encapsulate(rng)
                .map_err(|()| HpkeError::EncapError)?;
            let esk = StaticSecret::random_from_rng(&mut *rng);
            let ct_x = XPublic::from(&esk).to_bytes();
            let ss_x = esk.diffie_hellman(&pk.pk_x);
            if all_zero(ss_x.as_bytes()) {
                // Only a low-order recipient key gets here; its parse would
                // have to be hostile. Refuse rather than wrap to it.
                return Err(HpkeError::EncapError);
            }
            let ss = combine(&ss_m, ss_x.as_bytes(), &ct_x, pk.pk_x.as_bytes());
            Ok((SharedSecret(ss), EncappedKey { ct_m, ct_x }))
        }
    }
}

/// An `age1pq1…` recipient.
#[derive(Clone, PartialEq)]
pub struct Recipient(<Kem as hpke::Kem>::PublicKey);

impl std::str::FromStr for Recipient {
    type Err = &'static str;

    /// Parse an `age1pq1…` string (Bech32 without the 90-character limit).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        bech32_decode(
            s,
            |_| "invalid Bech32 encoding",
            |hrp| {
                (hrp == RECIPIENT_PREFIX)
                    .then_some(())
                    .ok_or("not an age1pq1 recipient")
            },
            |_, bytes| {
                let bytes: Vec<u8> = bytes.collect();
                if bytes.len() != RECIPIENT_LEN {
                    return Err("wrong length for an age1pq1 recipient");
                }
                <Kem as hpke::Kem>::PublicKey::from_bytes(&bytes)
                    .map(Recipient)
                    .map_err(|_| "invalid ML-KEM-768 encapsulation key")
            },
        )
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bech32_encode(RECIPIENT_PREFIX, &self.0.to_bytes()))
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pq::Recipient({self})")
    }
}

impl age::Recipient for Recipient {
    fn wrap_file_key(
        &self,
        file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        let (enc, ct) = hpke_seal::<Kem, _>(
            &self.0,
            INFO,
            file_key.expose_secret(),
            &mut rand::rngs::OsRng,
        );
        Ok((
            vec![Stanza {
                tag: STANZA_TAG.to_owned(),
                args: vec![BASE64_STANDARD_NO_PAD.encode(enc.to_bytes())],
                body: ct,
            }],
            [LABEL_POSTQUANTUM.to_owned()].into_iter().collect(),
        ))
    }
}

/// An `AGE-SECRET-KEY-PQ-1…` identity. Never printed by `Debug`.
#[derive(Clone)]
pub struct Identity(<Kem as hpke::Kem>::PrivateKey);

impl std::str::FromStr for Identity {
    type Err = &'static str;

    /// Parse an `AGE-SECRET-KEY-PQ-1…` string.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        bech32_decode(
            s,
            |_| "invalid Bech32 encoding",
            |hrp| {
                (hrp == IDENTITY_PREFIX)
                    .then_some(())
                    .ok_or("not an AGE-SECRET-KEY-PQ-1 identity")
            },
            |_, bytes| {
                let buf: Zeroizing<Vec<u8>> = Zeroizing::new(bytes.collect());
                let seed: [u8; 32] = buf
                    .as_slice()
                    .try_into()
                    .map_err(|_| "wrong length for an AGE-SECRET-KEY-PQ-1 identity")?;
                Ok(Identity(kem::PrivateKey::from_seed(seed)))
            },
        )
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pq::Identity(<secret>)")
    }
}

impl Identity {
    /// A new identity: 32 bytes from the OS CSPRNG (c2sp.org/age).
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        let id = Identity(kem::PrivateKey::from_seed(seed));
        seed.zeroize();
        id
    }

    /// The identity as written in identity files (upper-case Bech32).
    pub fn to_string(&self) -> SecretString {
        let mut encoded = bech32_encode(IDENTITY_PREFIX, self.0.seed());
        let s = SecretString::from(encoded.to_uppercase());
        encoded.zeroize();
        s
    }

    /// The matching `age1pq1…` recipient.
    pub fn to_public(&self) -> Recipient {
        Recipient(<Kem as hpke::Kem>::sk_to_pk(&self.0))
    }
}

impl age::Identity for Identity {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        if stanza.tag != STANZA_TAG {
            return None;
        }
        // The spec: exactly one argument after the tag, the canonical base64
        // of 1120 bytes, and a body of exactly 32 bytes (checked before any
        // decryption, against partitioning oracles).
        let [arg] = &stanza.args[..] else {
            return Some(Err(age::DecryptError::InvalidHeader));
        };
        let Some(enc) = canonical_base64(arg, ENC_LEN) else {
            return Some(Err(age::DecryptError::InvalidHeader));
        };
        if stanza.body.len() != BODY_LEN {
            return Some(Err(age::DecryptError::InvalidHeader));
        }
        let enc = match <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc) {
            Ok(e) => e,
            Err(_) => return Some(Err(age::DecryptError::InvalidHeader)),
        };
        match hpke_open::<Kem>(&enc, &self.0, INFO, &stanza.body) {
            Ok(pt) => {
                let pt = Zeroizing::new(pt);
                if pt.len() != 16 {
                    return Some(Err(age::DecryptError::InvalidHeader));
                }
                Some(Ok(FileKey::init_with_mut(|k| k.copy_from_slice(&pt))))
            }
            // An all-zero X25519 share is malformed whichever key reads it.
            Err(hpke::HpkeError::DecapError) => Some(Err(age::DecryptError::InvalidHeader)),
            // A wrong tag means "not for this identity" (ML-KEM decapsulation
            // never fails; it rejects implicitly): try the next stanza.
            Err(_) => None,
        }
    }
}

/// Decode `s` as base64 without padding, only if it is the one canonical
/// encoding of exactly `len` bytes.
fn canonical_base64(s: &str, len: usize) -> Option<Zeroizing<Vec<u8>>> {
    if s.len() != (len * 4).div_ceil(3) {
        return None;
    }
    let bytes = Zeroizing::new(BASE64_STANDARD_NO_PAD.decode(s).ok()?);
    (bytes.len() == len && BASE64_STANDARD_NO_PAD.encode(&bytes[..]) == s).then_some(bytes)
}

/// Whether a recipient string is an `age1pq1…` recipient: its Bech32 HRP
/// (everything before the last `1`) is `age1pq`. A classic `age1pq…` X25519
/// recipient has HRP `age` and is not one.
pub fn is_pq_recipient(s: &str) -> bool {
    s.rsplit_once('1')
        .is_some_and(|(hrp, _)| hrp.eq_ignore_ascii_case(RECIPIENT_HRP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    /// The example keys in the C2SP age spec.
    const SPEC_IDENTITY: &str =
        "AGE-SECRET-KEY-PQ-1XX76JRALNLXDMEW0CRK45QMCCH4X06SE84UN3VPM33W6HWDX0H3SK3ZQFR";

    #[test]
    fn identity_round_trip_and_recipient() {
        let id = Identity::from_str(SPEC_IDENTITY).unwrap();
        assert_eq!(id.to_string().expose_secret(), SPEC_IDENTITY);
        let r = id.to_public().to_string();
        assert!(r.starts_with("age1pq1x34nzsvr0rxjsgdn8zgyhfe8j7ceq5r9rdelkjuh3y235jzxshfg87"));
        assert!(r.ends_with("heyty7saeq0d3fzv49zc0k"), "{r}");
        assert_eq!(Recipient::from_str(&r).unwrap().to_string(), r);
        assert!(is_pq_recipient(&r));
    }

    #[test]
    fn wrap_unwrap() {
        let id = Identity::generate();
        let fk = FileKey::new(Box::new([7u8; 16]));
        let (stanzas, labels) = age::Recipient::wrap_file_key(&id.to_public(), &fk).unwrap();
        assert_eq!(
            labels,
            [LABEL_POSTQUANTUM.to_string()].into_iter().collect()
        );
        assert_eq!(stanzas.len(), 1);
        assert_eq!(stanzas[0].body.len(), 32);
        let got = age::Identity::unwrap_stanza(&id, &stanzas[0])
            .unwrap()
            .unwrap();
        assert_eq!(got.expose_secret(), &[7u8; 16]);
        let other = Identity::generate();
        assert!(age::Identity::unwrap_stanza(&other, &stanzas[0]).is_none());
    }

    #[test]
    fn hrp_routing() {
        assert!(!is_pq_recipient(
            "age1pqzvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
        ));
        assert!(Recipient::from_str("age1pq1qqqq").is_err());
    }

    #[test]
    fn canonical_base64_rules() {
        assert!(canonical_base64("AAA", 2).is_some());
        assert!(canonical_base64("AAB", 2).is_none()); // non-zero trailing bits
        assert!(canonical_base64("AAA=", 2).is_none());
        assert!(canonical_base64("AAAA", 2).is_none());
    }
}
