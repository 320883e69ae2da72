//! The gateway's config layering and validation.

/// Input: a config file as text; its lines of the form
/// `THERMOCLINE__SECTION__KEY=value` are taken out as the environment layer.
///
/// Loading and validation answer `Ok` or an error with a message, never a
/// panic; a config that loads prints as redacted TOML (`check-config`), and a
/// config that validates prints as TOML that loads and validates again.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut toml = String::with_capacity(text.len());
    let mut env = Vec::new();
    for line in text.split_inclusive('\n') {
        match line.trim_end().split_once('=') {
            Some((k, v)) if k.starts_with("THERMOCLINE__") => {
                env.push((k.to_owned(), v.to_owned()))
            }
            _ => toml.push_str(line),
        }
    }
    let raw = match gateway::config::load_str_with_env(&toml, env) {
        Ok(raw) => raw,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let shown = raw.to_redacted_toml();
    assert!(!shown.starts_with("# cannot render"), "{shown}");
    if let Err(e) = raw.validate() {
        assert!(!e.to_string().is_empty());
        return;
    }
    let again = gateway::config::load_str_with_env(&shown, Vec::new())
        .unwrap_or_else(|e| panic!("check-config output does not load: {e}\n{shown}"));
    if let Err(e) = again.validate() {
        panic!("check-config output does not validate: {e}\n{shown}");
    }
}
