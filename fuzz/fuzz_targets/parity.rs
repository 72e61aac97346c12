//! `casevault repair` against damaged parity files and vaults (issue #16).
//! The input is a list of edits to a valid vault and its parity file (a
//! small vault: one stripe of 15 shards, 20 % parity): truncations and
//! byte changes in either. Besides crashes it checks the one promise that
//! matters: whatever repair reports as `clean` or `repaired`, the vault on
//! disk is then exactly the sealed bytes.
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

struct Fx {
    _dir: tempfile::TempDir,
    vault: PathBuf,
    par: PathBuf,
    data: Vec<u8>,
    good_par: Vec<u8>,
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("v.vault");
        let data: Vec<u8> = (0..60_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        fs::write(&vault, &data).unwrap();
        let hex: String = sha2_hex(&data);
        fs::write(dir.path().join("v.vault.sha256"), format!("{hex}  v.vault\n")).unwrap();
        casevault::parity::write_for(&vault, 20, 0o600).unwrap();
        let par = casevault::parity::path(&vault);
        let good_par = fs::read(&par).unwrap();
        Fx {
            _dir: dir,
            vault,
            par,
            data,
            good_par,
        }
    })
}

fn sha2_hex(data: &[u8]) -> String {
    use sha2::Digest;
    casevault::io::hex(&sha2::Sha256::digest(data))
}

fuzz_target!(|input: &[u8]| {
    let f = fx();
    let mut vault = f.data.clone();
    let mut par = f.good_par.clone();
    // Records of 5 bytes: kind, 3-byte offset, value.
    for rec in input.chunks_exact(5) {
        let at = u32::from_le_bytes([rec[1], rec[2], rec[3], 0]) as usize;
        match rec[0] % 4 {
            0 if !vault.is_empty() => {
                let i = at % vault.len();
                vault[i] ^= rec[4] | 1;
            }
            1 if !par.is_empty() => {
                let i = at % par.len();
                par[i] = rec[4];
            }
            2 => vault.truncate(at % (f.data.len() + 1)),
            3 => par.truncate(at % (f.good_par.len() + 1)),
            _ => {}
        }
    }
    fs::write(&f.vault, &vault).unwrap();
    fs::write(&f.par, &par).unwrap();
    if let Ok(r) = casevault::parity::repair(&f.vault, &f.par) {
        if r.outcome == "clean" || r.outcome == "repaired" {
            assert!(
                fs::read(&f.vault).unwrap() == f.data,
                "repair said {} but the vault is not the sealed bytes",
                r.outcome
            );
        }
    }
});
