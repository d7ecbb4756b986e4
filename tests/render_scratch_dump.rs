// TEMPORARY: dump the synthetic bench repository to /tmp/synth.
#[test]
fn dump() {
    let (snap, _) = gitamp::bench::repo::synthetic_repo(5000);
    let _ = std::fs::remove_dir_all("/tmp/synth");
    for (p, b) in &snap.files {
        let path = std::path::Path::new("/tmp/synth").join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &b[..]).unwrap();
    }
}
