use super::*;

/// Files in a table, for includes.
struct Table(Vec<(&'static str, &'static str)>);

impl Files for Table {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.0
            .iter()
            .find(|(p, _)| Path::new(p) == path)
            .map(|(_, t)| t.to_string())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
    fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        let pat = glob::Pattern::new(pattern).expect("a pattern");
        let mut v: Vec<PathBuf> = self
            .0
            .iter()
            .filter(|(p, _)| pat.matches(p))
            .map(|(p, _)| PathBuf::from(p))
            .collect();
        v.sort();
        v
    }
}

fn texts(main: &str, id: &str, files: &Table) -> Vec<String> {
    let (lines, _) = expand(
        Path::new("/etc/keepalived/keepalived.conf"),
        main,
        id,
        files,
    )
    .expect("expands");
    lines
        .into_iter()
        .map(|l| l.text.trim().to_string())
        .collect()
}

#[test]
fn conditional_lines_follow_the_config_id() {
    let conf = "@lb1 a 1\n@lb2 a 2\n@^lb1 b 3\n  @^lb2 b 4\nc 5\n";
    let none = Table(vec![]);
    assert_eq!(texts(conf, "lb1", &none), ["a 1", "b 4", "c 5"]);
    assert_eq!(texts(conf, "lb2", &none), ["a 2", "b 3", "c 5"]);
    assert_eq!(texts(conf, "other", &none), ["b 3", "b 4", "c 5"]);
}

#[test]
fn parameters_are_replaced_when_used_recursively_and_undefined_ones_stay() {
    let conf = "$BASE=198.18.${SUB}\n$SUB=0\nvip ${BASE}.100\n$SUB=1\nvip ${BASE}.100\n\
                $PORT=80\nport $PORT\nport $PORTS\nkeep ${UNDEF} $UNDEF\n\
                @lb1 $PRIO=200\n@^lb1 $PRIO=100\npriority $PRIO\n";
    assert_eq!(
        texts(conf, "lb1", &Table(vec![])),
        [
            "vip 198.18.0.100",
            "vip 198.18.1.100",
            "port 80",
            "port $PORTS",
            "keep ${UNDEF} $UNDEF",
            "priority 200"
        ]
    );
}

#[test]
fn a_multiline_parameter_stands_for_lines_with_definitions_of_their_own() {
    let conf = "$RS= \\\n  real_server 198.18.1.${N} 80 { \\\n    weight 1 \\\n  }\n\
                $VS= \\\nvirtual_server 198.18.0.100 80 { \\\n  $N=11 \\\n  $RS \\\n  $N=12 \\\n  $RS \\\n}\n\
                $VS\n";
    assert_eq!(
        texts(conf, "x", &Table(vec![])),
        [
            "virtual_server 198.18.0.100 80 {",
            "real_server 198.18.1.11 80 {",
            "weight 1",
            "}",
            "real_server 198.18.1.12 80 {",
            "weight 1",
            "}",
            "}"
        ]
    );
}

#[test]
fn includes_take_wildcards_and_braces_relative_to_the_including_file() {
    let files = Table(vec![
        (
            "/etc/keepalived/conf.d/b.conf",
            "b\ninclude ../more/{x,y}.conf\n",
        ),
        ("/etc/keepalived/conf.d/a.conf", "a\n"),
        ("/etc/keepalived/more/x.conf", "x ${_PWD}\n"),
        ("/etc/keepalived/more/y.conf", "y\n"),
        ("/etc/keepalived/conf.d/c.txt", "not included\n"),
    ]);
    let conf = "top\ninclude conf.d/*.conf\nend\n";
    assert_eq!(
        texts(conf, "x", &files),
        ["top", "a", "b", "x /etc/keepalived/more", "y", "end"]
    );
    // Where each line comes from.
    let (lines, _) = expand(
        Path::new("/etc/keepalived/keepalived.conf"),
        conf,
        "x",
        &files,
    )
    .expect("expands");
    assert_eq!(lines[0].file, None);
    assert_eq!(
        (lines[2].file.as_deref(), lines[2].line),
        (Some("/etc/keepalived/conf.d/b.conf"), 1)
    );
    assert_eq!((lines[5].file.as_deref(), lines[5].line), (None, 3));
}

#[test]
fn a_missing_file_is_refused_an_empty_wildcard_is_a_note_a_loop_ends() {
    let files = Table(vec![("/etc/keepalived/loop.conf", "include loop.conf\n")]);
    let at = Path::new("/etc/keepalived/keepalived.conf");
    let e = expand(at, "a\ninclude nothere.conf\n", "x", &files).expect_err("refused");
    assert_eq!(e.line, 2);
    assert!(
        e.message
            .starts_with("include nothere.conf: reading /etc/keepalived/nothere.conf"),
        "{}",
        e.message
    );
    let (lines, notes) = expand(at, "include conf.d/*.conf\n", "x", &files).expect("a note");
    assert!(lines.is_empty());
    assert_eq!(notes, ["line 1: include conf.d/*.conf: no file matches"]);
    let e = expand(at, "include loop.conf\n", "x", &files).expect_err("a loop");
    assert!(e.message.contains("nest more than"), "{}", e.message);
    let e = expand(at, "$A=${A}x\nuse ${A}\n", "x", &files).expect_err("a loop");
    assert!(e.message.contains("nest more than"), "{}", e.message);
    let e = expand(at, "~SEQ(i, 1, 3) x $i\n", "x", &files).expect_err("refused");
    assert!(e.message.contains("~SEQ"), "{}", e.message);
}

#[test]
fn braces_expand_like_csh() {
    let b = |p: &str| braces(p).expect("expands");
    assert_eq!(b("a{b,c}d"), ["abd", "acd"]);
    assert_eq!(
        b("{x/{,1,2},y}.conf"),
        ["x/.conf", "x/1.conf", "x/2.conf", "y.conf"]
    );
    assert_eq!(b("plain"), ["plain"]);
    assert_eq!(b("a{b"), ["a{b"]);
    // 2^11 names take 4,095 steps: within the limit; 2^12 take 8,191: past it.
    assert_eq!(b(&"{a,b}".repeat(11)).len(), 2048);
    assert_eq!(braces(&"{a,b}".repeat(12)), None);
}

#[test]
fn braces_that_multiply_past_the_limit_are_refused_not_expanded() {
    // 2^20 names: a fuzzer's input like this one took 2 GiB before the limit.
    assert_eq!(braces(&"{a,b}".repeat(20)), None);
    let conf = format!("a\ninclude f.c/{}/*.conf\n", "{a,,\"}".repeat(30));
    let at = Path::new("/etc/keepalived/keepalived.conf");
    let e = expand(at, &conf, "x", &Table(vec![])).expect_err("refused");
    assert_eq!(e.line, 2);
    assert!(
        e.message
            .contains("brace expressions take more than 4096 steps to expand"),
        "{}",
        e.message
    );
}

#[test]
fn a_definition_that_doubles_itself_ends_in_an_error() {
    let at = Path::new("/etc/keepalived/keepalived.conf");
    let conf = "$A=x\n$B=${A}${A}${A}${A}${A}${A}${A}${A}\n$C=${B}${B}${B}${B}${B}${B}${B}${B}\n\
                $D=${C}${C}${C}${C}${C}${C}${C}${C}\n$E=${D}${D}${D}${D}${D}${D}${D}${D}\n\
                $F=${E}${E}${E}${E}${E}${E}${E}${E}\n$G=${F}${F}${F}${F}${F}${F}${F}${F}\nuse $G\n";
    let e = expand(at, conf, "x", &Table(vec![])).expect_err("too long");
    assert_eq!(e.line, 8);
    let many = "$A= \\\nl \\\nl \\\nl \\\nl \\\nl \\\nl \\\nl \\\nl\n\
                $B= \\\n$A \\\n$A \\\n$A \\\n$A \\\n$A \\\n$A \\\n$A \\\n$A\n\
                $C= \\\n$B \\\n$B \\\n$B \\\n$B \\\n$B \\\n$B \\\n$B \\\n$B\n\
                $D= \\\n$C \\\n$C \\\n$C \\\n$C \\\n$C \\\n$C \\\n$C \\\n$C\n\
                $E= \\\n$D \\\n$D \\\n$D \\\n$D \\\n$D \\\n$D \\\n$D \\\n$D\n\
                $F= \\\n$E \\\n$E \\\n$E \\\n$E \\\n$E \\\n$E \\\n$E \\\n$E\n\
                $F\n$F\n$F\n$F\n$F\n";
    let e = expand(at, many, "x", &Table(vec![])).expect_err("too many lines");
    assert!(e.message.contains("more than"), "{}", e.message);
}
