//! The start-up probe: every command a run sends, each once, on probe keys outside the value
//! namespace, so that an ACL that allows some and not others is found before anything is
//! written; and the key prefixes an ACL user may use, for the message that says which
//! `--cache-prefix` would fit.
use ::redis::{cmd, from_redis_value, Cmd, ConnectionLike, RedisError, RedisResult, Value};

use super::{is_noperm, RELEASE_SCRIPT, RENEW_SCRIPT};
use crate::cache::util::new_token;

/// The key prefixes an ACL user's key patterns allow (`~ddcolor:*` -> `ddcolor`; `~*` -> any,
/// as `*`), from `ACL GETUSER`'s reply (Redis 6: a list under `keys`; 7: one string).
pub(super) fn prefixes_from_getuser(v: &Value) -> Vec<String> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Map(m) => m.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for pair in items.chunks(2) {
        let [k, v] = pair else { continue };
        if ::redis::from_redis_value_ref::<String>(k).ok().as_deref() != Some("keys") {
            continue;
        }
        let patterns: Vec<String> = match v {
            Value::Array(a) => a
                .iter()
                .filter_map(|x| ::redis::from_redis_value_ref::<String>(x).ok())
                .collect(),
            other => ::redis::from_redis_value_ref::<String>(other)
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        };
        for p in patterns {
            // `~pat`, `%RW~pat`, `%R~pat`, or a bare pattern (Redis 6's list form)
            let pat = p.rsplit('~').next().unwrap_or(&p);
            if pat == "*" || pat == "allkeys" {
                out.push("*".to_owned());
            } else if let Some(prefix) = pat.strip_suffix(":*") {
                if !prefix.contains(['*', '?', '[']) {
                    out.push(prefix.to_owned());
                }
            }
        }
    }
    out
}

/// One command the start-up probe runs: what a run needs it for, and the ACL rule that
/// allows it.
pub(super) struct Step {
    pub command: &'static str,
    pub why: &'static str,
    pub rule: &'static str,
}

/// What the probe found.
pub(super) enum Probed {
    /// Every command a run needs was answered, and the probe value read back.
    Ok,
    /// The probe value read back different bytes.
    Mismatch,
    /// The ACL refused `step` (`detail`: the server's words).
    Refused { step: &'static Step, detail: String },
}

/// The ACL refused a command, directly (NOPERM) or inside a script (ERR ... can't run this
/// command).
fn is_refused(e: &RedisError) -> bool {
    is_noperm(e) || e.to_string().contains("can't run this command")
}

/// Every command a run sends, each once, on probe keys outside the value namespace
/// (`<prefix>:probe:<token>`), so that an ACL that allows some and not others is found before
/// anything is written: SET (values, leases), GET and MGET (lookups), PTTL (waiting for
/// another process's lease), PEXPIRE and DEL (inside the lease scripts, and first on their
/// own, to name the one refused), EVAL (renewing and releasing a lease).
pub(super) fn probe(conn: &mut dyn ConnectionLike, prefix: &str) -> RedisResult<Probed> {
    const SET: Step = Step {
        command: "SET",
        why: "storing results and taking leases",
        rule: "+set",
    };
    const GET: Step = Step {
        command: "GET",
        why: "looking results up",
        rule: "+get",
    };
    const MGET: Step = Step {
        command: "MGET",
        why: "looking results up in batches",
        rule: "+mget",
    };
    const PTTL: Step = Step {
        command: "PTTL",
        why: "waiting for another process's lease",
        rule: "+pttl",
    };
    const PEXPIRE: Step = Step {
        command: "PEXPIRE",
        why: "renewing a lease, inside the renewal script",
        rule: "+pexpire",
    };
    const DEL: Step = Step {
        command: "DEL",
        why: "releasing a lease, inside the release script",
        rule: "+del",
    };
    const EVAL: Step = Step {
        command: "EVAL",
        why: "the lease scripts: renewing and releasing a lease only while it is ours",
        rule: "+eval (or +@scripting)",
    };
    let key = format!("{prefix}:probe:{}", new_token());
    let token = new_token();
    let mut set = cmd("SET");
    set.arg(&key).arg(&token).arg("PX").arg(60_000);
    let mut get = cmd("GET");
    get.arg(&key);
    let mut mget = cmd("MGET");
    mget.arg(&key);
    let mut pttl = cmd("PTTL");
    pttl.arg(&key);
    let mut pexpire = cmd("PEXPIRE");
    pexpire.arg(&key).arg(60_000);
    let mut del = cmd("DEL");
    del.arg(format!("{key}:absent"));
    let mut renew = cmd("EVAL");
    renew
        .arg(RENEW_SCRIPT)
        .arg(1)
        .arg(&key)
        .arg(&token)
        .arg(60_000);
    let mut release = cmd("EVAL");
    release.arg(RELEASE_SCRIPT).arg(1).arg(&key).arg(&token);
    let steps: [(&Cmd, &'static Step); 8] = [
        (&set, &SET),
        (&get, &GET),
        (&mget, &MGET),
        (&pttl, &PTTL),
        (&pexpire, &PEXPIRE),
        (&del, &DEL),
        (&renew, &EVAL),
        (&release, &EVAL),
    ];
    let mut answers = Vec::with_capacity(steps.len());
    for (c, step) in steps {
        match c.query::<Value>(conn) {
            Ok(v) => answers.push(v),
            Err(e) => {
                // removed, or (DEL refused) expired now; at worst it lapses within a minute
                if cmd("DEL").arg(&key).query::<Value>(conn).is_err() {
                    let _ = cmd("PEXPIRE").arg(&key).arg(1).query::<Value>(conn);
                }
                if is_refused(&e) {
                    return Ok(Probed::Refused {
                        step,
                        detail: e.to_string(),
                    });
                }
                return Err(e);
            }
        }
    }
    let back: Option<String> = from_redis_value(answers[1].clone()).ok().flatten();
    Ok(if back.as_deref() == Some(token.as_str()) {
        Probed::Ok
    } else {
        Probed::Mismatch
    })
}
