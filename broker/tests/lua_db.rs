//! vmq_diversity's database modules and the bundled auth scripts end to end: real PostgreSQL,
//! MariaDB, Redis and memcached servers started here (`support/databases.rs`), the
//! `vmq-broker` binary, and mosquitto_pub/sub and rumqttc as the clients.

mod support;

use std::path::{Path, PathBuf};

use rumqttc::{Incoming, QoS};
use support::databases::{self, PASSWORD, Server};
use support::{BrokerProcess, WAIT, mosquitto_pub, poll_until, run, start_broker, text};

/// A broker as VerneMQ's docs set one up for database auth: anonymous off, passwd and acl off,
/// vmq_diversity on, and `extra`.
fn broker(dir: &Path, extra: &str) -> (BrokerProcess, String, PathBuf) {
    let conf = format!(
        "listener.tcp.default = 127.0.0.1:0\nlistener.http.default = 127.0.0.1:0\n\
         allow_anonymous = off\nplugins.vmq_passwd = off\nplugins.vmq_acl = off\n\
         plugins.vmq_diversity = on\npersistent_data_dir = {}\n{extra}",
        dir.join("data").display()
    );
    let path = dir.join("vernemq.conf");
    std::fs::write(&path, conf).unwrap();
    let (b, port) = start_broker(&path);
    (b, port, path)
}

/// `mosquitto_sub` for one message (10 s at most).
async fn sub_one(port: &str, args: &[&str]) -> std::process::Output {
    let mut a: Vec<String> = ["-h", "127.0.0.1", "-p", port, "-C", "1", "-W", "10"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(args.iter().map(|s| s.to_string()));
    run("mosquitto_sub", a).await
}

const PUBLISH_ACL: &str =
    r#"[{"pattern": "a/#"}, {"pattern": "users/%u/#"}, {"pattern": "clients/%c/#"}]"#;
const SUBSCRIBE_ACL: &str = r#"[{"pattern": "a/#"}, {"pattern": "clients/%c/#"}]"#;
const WIDER_PUBLISH_ACL: &str = r#"[{"pattern": "a/#"}, {"pattern": "b/#"}]"#;

/// What every bundled auth script must do, for user `alice` (password `alice-pw`, ACLs
/// [`PUBLISH_ACL`] / [`SUBSCRIBE_ACL`]); `widen` changes her publish ACL in the database to
/// [`WIDER_PUBLISH_ACL`]; the database is stopped and started again at the end.
async fn check_auth(
    b: &BrokerProcess,
    port: &str,
    db: &mut Server,
    widen: impl FnOnce(&Server),
    what: &str,
) {
    let who = ["-u", "alice", "-P", "alice-pw"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut v: Vec<&str> = who.to_vec();
        v.extend_from_slice(extra);
        v
    };
    // The right password connects; a publish inside the ACLs is delivered.
    let o = mosquitto_pub(
        port,
        &with(&["-i", "p1", "-t", "a/1", "-m", "hello", "-r", "-q", "1"]),
    )
    .await;
    assert!(o.status.success(), "{what}: {}\n{:?}", text(&o), b.logs());
    let o = sub_one(port, &with(&["-i", "s1", "-t", "a/#"])).await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "hello",
        "{what}: {}",
        text(&o)
    );

    // A wrong password, or none, is refused: the script says false, which VerneMQ answers
    // as invalid credentials (MQTT 3: 4).
    let o = mosquitto_pub(
        port,
        &[
            "-i", "p2", "-u", "alice", "-P", "nope", "-t", "a/1", "-m", "x",
        ],
    )
    .await;
    assert!(
        text(&o).contains("bad user name or password"),
        "{what}: {}",
        text(&o)
    );
    let o = mosquitto_pub(port, &["-i", "p2", "-u", "alice", "-t", "a/1", "-m", "x"]).await;
    assert!(!o.status.success(), "{what}: {}", text(&o));
    let o = mosquitto_pub(
        port,
        &[
            "-i", "p2", "-u", "mallory", "-P", "alice-pw", "-t", "a/1", "-m", "x",
        ],
    )
    .await;
    assert!(
        text(&o).contains("bad user name or password"),
        "{what}: {}",
        text(&o)
    );

    // Outside the ACLs: an MQTT 5 publish gets 0x87, a subscribe is denied.
    let o = mosquitto_pub(
        port,
        &with(&[
            "-i", "p3", "-V", "mqttv5", "-q", "1", "-t", "b/1", "-m", "x",
        ]),
    )
    .await;
    assert!(text(&o).contains("Not authorized"), "{what}: {}", text(&o));
    let o = sub_one(port, &with(&["-i", "s3", "-t", "b/#"])).await;
    assert!(text(&o).contains("denied"), "{what}: {}", text(&o));

    // %u and %c patterns.
    let o = mosquitto_pub(
        port,
        &with(&[
            "-i",
            "p4",
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "users/alice/x",
            "-m",
            "x",
        ]),
    )
    .await;
    assert!(
        o.status.success() && !text(&o).contains("Not authorized"),
        "{what}: {}",
        text(&o)
    );
    let o = mosquitto_pub(
        port,
        &with(&[
            "-i",
            "p4",
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "users/bob/x",
            "-m",
            "x",
        ]),
    )
    .await;
    assert!(text(&o).contains("Not authorized"), "{what}: {}", text(&o));
    let o = mosquitto_pub(
        port,
        &with(&[
            "-i",
            "c9",
            "-t",
            "clients/c9/x",
            "-m",
            "mine",
            "-r",
            "-q",
            "1",
        ]),
    )
    .await;
    assert!(o.status.success(), "{what}: {}", text(&o));
    let o = sub_one(port, &with(&["-i", "c9", "-t", "clients/c9/#"])).await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "mine",
        "{what}: {}",
        text(&o)
    );
    let o = sub_one(port, &with(&["-i", "c10", "-t", "clients/c9/#"])).await;
    assert!(text(&o).contains("denied"), "{what}: {}", text(&o));

    // An ACL changed in the database applies from the next CONNECT.
    widen(db);
    let o = mosquitto_pub(
        port,
        &with(&[
            "-i", "p5", "-V", "mqttv5", "-q", "1", "-t", "b/1", "-m", "x",
        ]),
    )
    .await;
    assert!(
        o.status.success() && !text(&o).contains("Not authorized"),
        "{what}: {}",
        text(&o)
    );

    // The database goes away: refused (and logged); back: accepted, without a broker restart.
    db.stop();
    let o = mosquitto_pub(port, &with(&["-i", "p6", "-t", "a/1", "-m", "x"])).await;
    assert!(text(&o).contains("not authorised"), "{what}: {}", text(&o));
    let logs = b.logs().lock().unwrap().join("\n");
    assert!(logs.contains("cannot connect to"), "{what}: {logs}");
    db.start();
    let o = mosquitto_pub(port, &with(&["-i", "p7", "-t", "a/1", "-m", "x"])).await;
    assert!(
        o.status.success(),
        "{what}: {}\n{:?}\n{}",
        text(&o),
        b.logs(),
        db.log()
    );
}

const SQL_TABLE: &str = "CREATE TABLE vmq_auth_acl (mountpoint varchar(10) NOT NULL, \
     client_id varchar(128) NOT NULL, username varchar(128) NOT NULL, password varchar(128), \
     publish_acl json, subscribe_acl json, PRIMARY KEY (mountpoint, client_id, username))";

fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_auth_with_crypt_and_bcrypt() {
    let mut pg = databases::postgres();
    databases::psql(&pg, SQL_TABLE);
    // As VerneMQ's docs deploy a user: crypt(pw, gen_salt('bf')) by pgcrypto.
    databases::psql(
        &pg,
        &format!(
            "INSERT INTO vmq_auth_acl VALUES ('', '*', 'alice', crypt('alice-pw', gen_salt('bf')), {}, {})",
            sql_quote(PUBLISH_ACL),
            sql_quote(SUBSCRIBE_ACL)
        ),
    );
    // A row for one client id wins over the user's '*' row.
    databases::psql(
        &pg,
        "INSERT INTO vmq_auth_acl VALUES ('', 'only-c', 'alice', crypt('alice-pw', gen_salt('bf')), \
         '[{\"pattern\": \"c/#\"}]', NULL)",
    );
    let dir = tempfile::tempdir().unwrap();
    let conn = format!(
        "vmq_diversity.postgres.host = 127.0.0.1\nvmq_diversity.postgres.port = {}\n\
         vmq_diversity.postgres.user = vmq\nvmq_diversity.postgres.password = {PASSWORD}\n\
         vmq_diversity.postgres.database = vernemq_db\n",
        pg.port
    );
    let (b, port, _) = broker(
        dir.path(),
        &format!("vmq_diversity.auth_postgres.enabled = on\n{conn}"),
    );
    let o = mosquitto_pub(
        &port,
        &[
            "-i", "only-c", "-u", "alice", "-P", "alice-pw", "-V", "mqttv5", "-q", "1", "-t",
            "a/1", "-m", "x",
        ],
    )
    .await;
    assert!(text(&o).contains("Not authorized"), "{}", text(&o));
    let o = mosquitto_pub(
        &port,
        &[
            "-i", "only-c", "-u", "alice", "-P", "alice-pw", "-V", "mqttv5", "-q", "1", "-t",
            "c/1", "-m", "x",
        ],
    )
    .await;
    assert!(
        o.status.success() && !text(&o).contains("Not authorized"),
        "{}",
        text(&o)
    );

    check_auth(
        &b,
        &port,
        &mut pg,
        |pg| {
            databases::psql(
                pg,
                &format!(
                    "UPDATE vmq_auth_acl SET publish_acl = {} WHERE client_id = '*'",
                    sql_quote(WIDER_PUBLISH_ACL)
                ),
            );
        },
        "postgres crypt",
    )
    .await;
    drop(b);

    // password_hash_method = bcrypt: the hash is checked by the broker.
    let hash = bcrypt::hash("bob-pw", 4).unwrap();
    databases::psql(
        &pg,
        &format!(
            "INSERT INTO vmq_auth_acl VALUES ('', '*', 'bob', {}, '[{{\"pattern\": \"a/#\"}}]', NULL)",
            sql_quote(&hash)
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let (b, port, _) = broker(
        dir.path(),
        &format!(
            "vmq_diversity.auth_postgres.enabled = on\n{conn}\
             vmq_diversity.postgres.password_hash_method = bcrypt\n"
        ),
    );
    let o = mosquitto_pub(
        &port,
        &["-u", "bob", "-P", "bob-pw", "-t", "a/1", "-m", "x"],
    )
    .await;
    assert!(o.status.success(), "{}\n{:?}", text(&o), b.logs());
    let o = mosquitto_pub(&port, &["-u", "bob", "-P", "nope", "-t", "a/1", "-m", "x"]).await;
    assert!(
        text(&o).contains("bad user name or password"),
        "{}",
        text(&o)
    );
    // MQTT 3 and 5 subscribe refusals carry their codes (0x80, 0x87).
    let mut opts = rumqttc::MqttOptions::new("bob-v3", "127.0.0.1", port.parse().unwrap());
    opts.set_credentials("bob", "bob-pw");
    let (c, mut events) = rumqttc::AsyncClient::new(opts, 10);
    c.subscribe("z/1", QoS::AtMostOnce).await.unwrap();
    let mut codes = Vec::new();
    poll_until(&mut events, |p| match p {
        Incoming::SubAck(s) => {
            codes = s.return_codes.clone();
            true
        }
        _ => false,
    })
    .await;
    assert_eq!(codes, [rumqttc::SubscribeReasonCode::Failure]);
    subscribe_v5_refused(&port).await;
    drop(b);
}

/// An MQTT 5 SUBSCRIBE outside bob's ACLs gets 0x87.
async fn subscribe_v5_refused(port: &str) {
    use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut opts = MqttOptions::new("bob-v5", "127.0.0.1", port.parse().unwrap());
    opts.set_credentials("bob", "bob-pw");
    let (c, mut events) = AsyncClient::new(opts, 10);
    c.subscribe("z/1", rumqttc::v5::mqttbytes::QoS::AtMostOnce)
        .await
        .unwrap();
    let codes = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(s)) = events.poll().await.unwrap() {
                return s.return_codes;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(codes, [SubscribeReasonCode::NotAuthorized]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_auth_with_mysql2_and_mysql() {
    let mut db = databases::mariadb();
    databases::mariadb_sql(
        &db,
        "CREATE TABLE vmq_auth_acl (mountpoint VARCHAR(10) NOT NULL, client_id VARCHAR(128) \
         NOT NULL, username VARCHAR(128) NOT NULL, password VARCHAR(128), publish_acl TEXT, \
         subscribe_acl TEXT, PRIMARY KEY (mountpoint, client_id, username))",
    );
    // mysql2's default hash: SHA2(pw, 256), as VerneMQ's docs insert it.
    databases::mariadb_sql(
        &db,
        &format!(
            "INSERT INTO vmq_auth_acl VALUES ('', '*', 'alice', SHA2('alice-pw', 256), {}, {})",
            sql_quote(PUBLISH_ACL),
            sql_quote(SUBSCRIBE_ACL)
        ),
    );
    let conn = |db: &str, port: u16| {
        format!(
            "vmq_diversity.{db}.host = 127.0.0.1\nvmq_diversity.{db}.port = {port}\n\
             vmq_diversity.{db}.user = vmq\nvmq_diversity.{db}.password = {PASSWORD}\n\
             vmq_diversity.{db}.database = vernemq_db\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let (b, port, _) = broker(
        dir.path(),
        &format!(
            "vmq_diversity.auth_mysql2.enabled = on\n{}",
            conn("mysql2", db.port)
        ),
    );
    check_auth(
        &b,
        &port,
        &mut db,
        |db| {
            databases::mariadb_sql(
                db,
                &format!(
                    "UPDATE vmq_auth_acl SET publish_acl = {} WHERE client_id = '*'",
                    sql_quote(WIDER_PUBLISH_ACL)
                ),
            );
        },
        "mariadb mysql2",
    )
    .await;
    drop(b);

    // The `mysql` script with password_hash_method = md5.
    databases::mariadb_sql(
        &db,
        "INSERT INTO vmq_auth_acl VALUES ('', 'c1', 'carol', MD5('carol-pw'), '[{\"pattern\": \"a/#\"}]', NULL)",
    );
    let dir = tempfile::tempdir().unwrap();
    let (b, port, _) = broker(
        dir.path(),
        &format!(
            "vmq_diversity.auth_mysql.enabled = on\n{}vmq_diversity.mysql.password_hash_method = md5\n",
            conn("mysql", db.port)
        ),
    );
    let o = mosquitto_pub(
        &port,
        &[
            "-i", "c1", "-u", "carol", "-P", "carol-pw", "-t", "a/1", "-m", "x",
        ],
    )
    .await;
    assert!(o.status.success(), "{}\n{:?}", text(&o), b.logs());
    let o = mosquitto_pub(
        &port,
        &[
            "-i", "c2", "-u", "carol", "-P", "carol-pw", "-t", "a/1", "-m", "x",
        ],
    )
    .await;
    assert!(
        text(&o).contains("bad user name or password"),
        "only c1 has a row: {}",
        text(&o)
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_auth() {
    let mut db = databases::redis();
    let entry = |acl: &str| {
        format!(
            r#"{{"passhash": "{}", "publish_acl": {acl}, "subscribe_acl": {SUBSCRIBE_ACL}}}"#,
            bcrypt::hash("alice-pw", 4).unwrap()
        )
    };
    databases::redis_cli(&db, &["SET", r#"["","*","alice"]"#, &entry(PUBLISH_ACL)]);
    let dir = tempfile::tempdir().unwrap();
    let (b, port, _) = broker(
        dir.path(),
        &format!(
            "vmq_diversity.auth_redis.enabled = on\nvmq_diversity.redis.host = 127.0.0.1\n\
             vmq_diversity.redis.port = {}\nvmq_diversity.redis.password = {PASSWORD}\n",
            db.port
        ),
    );
    check_auth(
        &b,
        &port,
        &mut db,
        |db| {
            databases::redis_cli(
                db,
                &["SET", r#"["","*","alice"]"#, &entry(WIDER_PUBLISH_ACL)],
            );
        },
        "redis",
    )
    .await;
    drop(b);
}

/// Every database module from one script: types in and out, `false` for what the database
/// refuses, a catchable error for a database that is not there.
const MODULES_SCRIPT: &str = r#"
local function check(cond, what) if not cond then error("check failed: " .. what) end end

postgres.ensure_pool({pool_id = "pg", host = "127.0.0.1", port = PG_PORT, user = "vmq",
  password = PASSWORD, database = "vernemq_db"})
postgres.ensure_pool({pool_id = "pg_down", host = "127.0.0.1", port = DOWN_PORT, user = "vmq",
  password = PASSWORD, database = "vernemq_db"})
postgres.ensure_pool({pool_id = "pg_tls", host = "127.0.0.1", port = PG_PORT, user = "vmq",
  password = PASSWORD, database = "vernemq_db", ssl = true, cacertfile = PG_CA})
postgres.ensure_pool({pool_id = "pg_tls_unknown_ca", host = "127.0.0.1", port = PG_PORT,
  user = "vmq", password = PASSWORD, database = "vernemq_db", ssl = true, use_system_cas = false})
mysql2.ensure_pool({pool_id = "my", host = "127.0.0.1", port = MY_PORT, user = "vmq",
  password = PASSWORD, database = "vernemq_db"})
redis.ensure_pool({pool_id = "rd", host = "127.0.0.1", port = REDIS_PORT, password = PASSWORD})
memcached.ensure_pool({pool_id = "mc", host = "127.0.0.1", port = MC_PORT})

local function postgres_checks()
  check(postgres.execute("pg", "CREATE TABLE IF NOT EXISTS t (id int, name text, score float8, flag bool, note text, doc jsonb)") == false, "DDL changes no row")
  check(postgres.execute("pg", "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6)", 1, "it's; DROP TABLE t", 2.5, true, nil, '{"a": 1}') == true, "insert")
  local rows = postgres.execute("pg", "SELECT * FROM t WHERE id = $1", 1)
  check(#rows == 1, "one row")
  local r = rows[1]
  check(r.id == 1 and r.name == "it's; DROP TABLE t" and r.score == 2.5 and r.flag == true, "values")
  check(r.note == "null", "NULL as VerneMQ gives it")
  check(json.decode(r.doc).a == 1, "jsonb")
  check(#postgres.execute("pg", "SELECT * FROM t WHERE id = $1", "2") == 0, "no rows, text bound to int")
  check(postgres.execute("pg", "UPDATE t SET name = 'x' WHERE id = 99") == false, "nothing updated")
  check(postgres.execute("pg", "SELECT nope FROM t") == false, "bad SQL")
  check(postgres.hash_method() == "crypt", "hash method")
  local ok, err = pcall(postgres.execute, "pg_down", "SELECT 1")
  check(not ok and tostring(err):find("cannot connect") ~= nil, "down: " .. tostring(err))
  -- ssl = true: the connection is TLS, checked against the CA given; an unknown CA refuses.
  local tls = postgres.execute("pg_tls", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
  check(#tls == 1 and tls[1].ssl == true, "TLS to PostgreSQL")
  local ok3, err3 = pcall(postgres.execute, "pg_tls_unknown_ca", "SELECT 1")
  check(not ok3 and tostring(err3):find("cannot connect") ~= nil, "unknown CA: " .. tostring(err3))
  local plain = postgres.execute("pg", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
  check(plain[1].ssl == false, "no TLS without ssl")
  local ok2, err2 = pcall(postgres.execute, "nope", "SELECT 1")
  check(not ok2 and tostring(err2):find("unknown pool") ~= nil, "unknown pool")
end

local function mysql_checks()
  mysql2.execute("my", "CREATE TABLE IF NOT EXISTS t (id INT, name TEXT, score DOUBLE, note TEXT)")
  check(mysql2.execute("my", "INSERT INTO t VALUES (?, ?, ?, ?)", 1, "it's", 2.5, nil) == true, "insert")
  local rows = mysql2.execute("my", "SELECT * FROM t WHERE id = ?", 1)
  check(#rows == 1 and rows[1].id == 1 and rows[1].name == "it's" and rows[1].score == 2.5, "values")
  check(rows[1].note == nil, "NULL")
  check(mysql2.execute("my", "SELECT nope FROM t") == false, "bad SQL")
  check(mysql2.hash_method() == "SHA2(?, 256)", "hash method")
end

local function redis_checks()
  check(redis.cmd("rd", "SET k1", "a value with spaces") == true, "SET is OK")
  check(redis.cmd("rd", "GET k1") == "a value with spaces", "GET")
  check(redis.cmd("rd", "GET missing") == nil, "nil reply")
  check(redis.cmd("rd", "INCR counter") == "1", "integers as strings")
  check(redis.cmd("rd", "RPUSH list", {"x", "y"}) == "2", "array flattened")
  local l = redis.cmd("rd", "LRANGE list 0 -1")
  check(l[1] == "x" and l[2] == "y", "multi-bulk")
  check(redis.cmd("rd", "INCR k1") == false, "error reply")
end

local function memcached_checks()
  check(memcached.flush_all("mc") == true, "flush")
  check(memcached.set("mc", "k", "v1") == "v1", "set")
  check(memcached.get("mc", "k") == "v1", "get")
  check(memcached.add("mc", "k", "v2") == false, "add of a present key")
  check(memcached.replace("mc", "k", "v3") == "v3", "replace")
  check(memcached.get("mc", "k") == "v3", "get replaced")
  check(memcached.delete("mc", "k") == true, "delete")
  check(memcached.get("mc", "k") == false, "gone")
end

function auth_on_register(reg)
  if reg.username == "postgres" then postgres_checks()
  elseif reg.username == "mysql" then mysql_checks()
  elseif reg.username == "redis" then redis_checks()
  elseif reg.username == "memcached" then memcached_checks()
  elseif reg.username == "cache" then return true
  elseif reg.username == "mongodb" then
    local ok, err = pcall(mongodb.ensure_pool, {})
    check(not ok and tostring(err):find("not supported") ~= nil, "mongodb: " .. tostring(err))
  else return false end
  return true
end

-- A value cached in memcached by one hook and read back by another.
function auth_on_publish(pub)
  if pub.topic == "cache/put" then
    memcached.set("mc", "cached", pub.payload, 60)
    return true
  end
  if pub.topic == "cache/get" then
    return {payload = memcached.get("mc", "cached")}
  end
  return true
end

function auth_on_subscribe(sub) return true end

hooks = {auth_on_register = auth_on_register, auth_on_publish = auth_on_publish,
  auth_on_subscribe = auth_on_subscribe}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_modules_from_a_script() {
    let pg = databases::postgres();
    let my = databases::mariadb();
    let rd = databases::redis();
    let mc = databases::memcached();
    let dir = tempfile::tempdir().unwrap();
    let script = MODULES_SCRIPT
        .replace("PG_PORT", &pg.port.to_string())
        .replace("DOWN_PORT", &databases::free_port().to_string())
        .replace(
            "PG_CA",
            &format!("{:?}", pg.dir().join("tls/ca.pem").display().to_string()),
        )
        .replace("MY_PORT", &my.port.to_string())
        .replace("REDIS_PORT", &rd.port.to_string())
        .replace("MC_PORT", &mc.port.to_string())
        .replace("PASSWORD", &format!("{PASSWORD:?}"));
    let path = dir.path().join("modules.lua");
    std::fs::write(&path, script).unwrap();
    let (b, port, _) = broker(
        dir.path(),
        &format!("vmq_diversity.modules.file = {}\n", path.display()),
    );
    for module in ["postgres", "mysql", "redis", "memcached", "mongodb"] {
        let o = mosquitto_pub(&port, &["-u", module, "-P", "x", "-t", "t", "-m", "x"]).await;
        assert!(
            o.status.success(),
            "{module}: {}\n{}",
            text(&o),
            b.logs().lock().unwrap().join("\n")
        );
    }
    let o = mosquitto_pub(&port, &["-u", "nobody", "-P", "x", "-t", "t", "-m", "x"]).await;
    assert!(
        text(&o).contains("bad user name or password"),
        "{}",
        text(&o)
    );

    // memcached: a payload cached by one publish comes back in another.
    let o = mosquitto_pub(
        &port,
        &[
            "-u",
            "cache",
            "-P",
            "x",
            "-t",
            "cache/put",
            "-m",
            "from memcached",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let o = mosquitto_pub(
        &port,
        &[
            "-u",
            "cache",
            "-P",
            "x",
            "-t",
            "cache/get",
            "-m",
            "x",
            "-r",
            "-q",
            "1",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let o = sub_one(&port, &["-u", "cache", "-P", "x", "-t", "cache/get"]).await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "from memcached",
        "{}\n{}",
        text(&o),
        b.logs().lock().unwrap().join("\n")
    );
    drop(b);
}
