// One-shot initiation of the MongoDB replica set rs0 (run by the mongo-init service):
//   mongosh --nodb --quiet /notihub/mongo-init.js
// Idempotent: when rs0 is already initiated it only waits for a primary and exits 0.
// Exits non-zero when the members or a primary do not show up in time.

const SET_NAME = "rs0";
const MEMBERS = ["mongo1:27017", "mongo2:27017", "mongo3:27017"];
const WAIT_SECONDS = 180;

function log(msg) {
  print(`mongo-init: ${msg}`);
}

function fail(msg) {
  log(`FAILED: ${msg}`);
  quit(1);
}

// Run fn every second until it returns a truthy value or the deadline passes.
function waitUntil(what, fn) {
  const deadline = Date.now() + WAIT_SECONDS * 1000;
  let lastError = null;
  while (Date.now() < deadline) {
    try {
      const value = fn();
      if (value) return value;
    } catch (e) {
      lastError = e;
    }
    sleep(1000);
  }
  fail(`timed out waiting for ${what}${lastError ? ` (last error: ${lastError.message})` : ""}`);
}

// One direct connection per member, kept once it has answered.
const connections = {};

function admin(host) {
  if (connections[host]) return connections[host].getDB("admin");
  const conn = new Mongo(`mongodb://${host}/?directConnection=true&serverSelectionTimeoutMS=2000`);
  const db = conn.getDB("admin");
  db.runCommand({ ping: 1 });
  connections[host] = conn;
  return db;
}

// 1. Every member answers.
for (const host of MEMBERS) {
  waitUntil(`${host} to answer`, () => admin(host).runCommand({ ping: 1 }).ok === 1);
  log(`${host} answers`);
}

// 2. Initiate, unless some member already belongs to an initiated set.
function initiatedSetName() {
  for (const host of MEMBERS) {
    const hello = admin(host).runCommand({ hello: 1 });
    if (hello.setName) return hello.setName;
  }
  return null;
}

const existing = initiatedSetName();
if (existing && existing !== SET_NAME) {
  fail(`members already belong to replica set ${existing}, expected ${SET_NAME}`);
}
if (existing) {
  log(`replica set ${SET_NAME} already initiated`);
} else {
  const config = {
    _id: SET_NAME,
    members: MEMBERS.map((host, i) => ({ _id: i, host, priority: i === 0 ? 2 : 1 })),
  };
  let result;
  try {
    result = admin(MEMBERS[0]).runCommand({ replSetInitiate: config });
  } catch (e) {
    result = { ok: 0, code: e.code, codeName: e.codeName, errmsg: e.message };
  }
  if (result.ok === 1) {
    log(`replica set ${SET_NAME} initiated with ${MEMBERS.join(", ")}`);
  } else if (result.code === 23 || result.codeName === "AlreadyInitialized") {
    log(`replica set ${SET_NAME} already initiated`);
  } else {
    fail(`replSetInitiate: ${result.errmsg || JSON.stringify(result)}`);
  }
}

// 3. A primary is elected and every member sees the set (so clients can discover it).
const primary = waitUntil("a primary", () => {
  for (const host of MEMBERS) {
    const hello = admin(host).runCommand({ hello: 1 });
    if (hello.setName === SET_NAME && hello.isWritablePrimary) return host;
  }
  return null;
});
waitUntil("every member to join the set", () =>
  MEMBERS.every((host) => {
    const hello = admin(host).runCommand({ hello: 1 });
    return hello.setName === SET_NAME && (hello.isWritablePrimary || hello.secondary);
  }),
);
log(`primary is ${primary}; all members are in ${SET_NAME}`);
quit(0);
