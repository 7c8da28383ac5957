//! `ddcolor man` (the roff page, built from the clap definitions) and `ddcolor completions`.
use super::exit::ExitCode;

/// Print the completion script for `shell` of the command tree `cmd` to stdout.
pub fn completions(shell: clap_complete::Shell, mut cmd: clap::Command) -> std::io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "ddcolor", &mut script);
    crate::say::stdout_bytes(&script)
}

/// The manual page, ddcolor(1), as one page: clap_mangen's name, synopsis, description and
/// command list, then every command's synopsis and options, the environment, where weights
/// are looked for, and the exit status.
pub fn man_page(cmd: clap::Command, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap_mangen::roff::{bold, roman, Roff};
    fn leaves(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
        if cmd.has_subcommands() {
            cmd.get_subcommands().for_each(|c| leaves(c, out));
        } else {
            out.push(cmd.clone());
        }
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]).text([roman(
        "ddcolor colorizes scanned black-and-white photos with DDColor: files and folders in, a \
         mirrored tree of colour images out, each distinct image inferred once (results are \
         cached by content, on disk or in Redis). The model is one of the authors' released \
         checkpoints, found on this machine or downloaded on first use (see WEIGHTS).",
    )]);
    roff.control("SH", ["COMMANDS"]);
    roff.to_writer(w)?;
    let mut subs = Vec::new();
    cmd.get_subcommands().for_each(|c| leaves(c, &mut subs));
    for sub in subs {
        let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_owned();
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string());
        let page = clap_mangen::Man::new(sub);
        let mut synopsis = Vec::new();
        page.render_synopsis_section(&mut synopsis)?;
        let mut options = Vec::new();
        page.render_options_section(&mut options)?;
        let mut roff = Roff::new();
        roff.control("SS", [name.as_str()]);
        roff.to_writer(w)?;
        // clap_mangen's sections become paragraphs of this command's subsection
        let body = |buf: &[u8], w: &mut dyn std::io::Write| -> std::io::Result<()> {
            for line in String::from_utf8_lossy(buf).lines() {
                if !line.starts_with(".SH ") {
                    writeln!(w, "{line}")?;
                }
            }
            Ok(())
        };
        body(&synopsis, w)?;
        let mut roff = Roff::new();
        roff.control("PP", []);
        if let Some(about) = about {
            roff.text([roman(about)]);
        }
        roff.to_writer(w)?;
        body(&options, w)?;
    }
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    let env: [(&str, &str); 8] = [
        ("DDCOLOR_WEIGHTS", "The checkpoint file, as --weights."),
        ("DDCOLOR_MODEL", "The released model, as --model."),
        ("DDCOLOR_CACHE", "The result cache, as --cache."),
        ("DDCOLOR_CACHE_TLS_CERT", "The client certificate for mutual TLS, as --cache-tls-cert."),
        ("DDCOLOR_CACHE_TLS_KEY", "Its private key, as --cache-tls-key."),
        ("DDCOLOR_CACHE_TLS_CA", "The CA that signed the Redis server's certificate, as --cache-tls-ca."),
        ("SSL_CERT_FILE", "A PEM bundle of CA certificates trusted for rediss:// instead of the system's (without --cache-tls-ca)."),
        ("SSL_CERT_DIR", "A folder of CA certificates trusted for rediss:// (without --cache-tls-ca)."),
    ];
    for (k, v) in env.iter().chain(crate::weights::ENVIRONMENT) {
        roff.control("TP", []).text([bold(*k)]).text([roman(*v)]);
    }
    roff.control("SH", ["WEIGHTS"]);
    roff.text([roman(
        "Where the checkpoint comes from, the first that applies (NAME is --model):",
    )]);
    for (i, step) in crate::weights::RESOLUTION_ORDER.iter().enumerate() {
        roff.control("TP", [])
            .text([bold(format!("{}.", i + 1))])
            .text([roman(*step)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for code in ExitCode::ALL {
        let meaning = code.meaning().replace('`', "");
        let sentence = format!("{}{}.", meaning[..1].to_uppercase(), &meaning[1..]);
        roff.control("TP", [])
            .text([bold(code.code().to_string())])
            .text([roman(sentence)]);
    }
    roff.to_writer(w)?;
    man.render_version_section(w)
}
