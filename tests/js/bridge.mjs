// JSON-lines bridge between the Python test suite and the real Socket.IO JavaScript client.
//
// One long-running Node process drives any number of client sockets ("tabs"), each with its own
// Manager (its own Engine.IO connection), exactly as a browser tab or a Node user would.
//
// stdin: one JSON command per line. Every command may carry "req" (any JSON value); a command
// with "req" gets exactly one reply carrying the same "req":
//   {"type":"ok","req":…, ...}              the command was carried out
//   {"type":"ack","req":…,"data":…}         acknowledgement of an emit with "ack": true
//   {"type":"ack","req":…,"error":"timeout"} no acknowledgement within the timeout
//   {"type":"error","req":…,"message":…}    the command failed (bad input, unknown id, ...)
// A failing command without "req" is reported as {"type":"error","message":…}. The bridge never
// exits on bad input.
//
// Commands:
//   {"op":"connect","id":"tab1","url":"http://127.0.0.1:8080/notifications","options":{…}}
//       options are socket.io-client options (transports, query, auth, reconnection,
//       reconnectionDelay, reconnectionDelayMax, reconnectionAttempts, timeout, path, ...).
//       forceNew defaults to true so every id has its own connection. Extra option
//       "trackSince": true keeps auth.since at the newest notification id received.
//   {"op":"emit","id":"tab1","event":"mark_read","data":{…}}                 fire and forget
//   {"op":"emit","id":"tab1","event":"mark_read","data":{…},"ack":true,"timeout":5000,"req":7}
//       "args": [...] may replace "data" to send several arguments (or none: []).
//       "raw": true sends the EVENT packet even for a name socket.io-client reserves for itself
//       ("connect", "disconnect", ...), as any other client could.
//   {"op":"set","id":"tab1","path":"auth"|"query","value":{…},"merge":false}
//       auth/query used by the NEXT (re)connection (socket.auth / socket.io.opts.query).
//   {"op":"disconnect","id":"tab1"}      socket.disconnect() (no automatic reconnection)
//   {"op":"open","id":"tab1"}            socket.connect() again after a disconnect
//   {"op":"drop","id":"tab1"}            closes the underlying transport as a network loss
//                                        would; the Manager then reconnects if enabled
//   {"op":"remove","id":"tab1"}          disconnect and forget the id
//   {"op":"status","id":"tab1"}          reply with connected/active/transport/engine_id/sid
//   {"op":"ping"}                        reply {"type":"ok"}
//   {"op":"close"}                       disconnect everything, print {"type":"closed"}, exit 0
//
// stdout: one JSON object per line.
//   {"type":"ready","pid":…,"client_version":"4.8.x","node":"v20…"}          once, at start
//   {"type":"event","id":"tab1","event":<name>,"data":…,"transport":…,"engine_id":…,
//    "sid":…,"seq":…,"ts":…}
//   Event names:
//     every server event (onAny); data is the first argument, "args" holds all of them when the
//       server sent more than one, "server_ack": true when the server asked for an ack
//     "connect"          data {sid, recovered}
//     "disconnect"       data {reason, description}
//     "connect_error"    data {message, data, description, type}   (err.data is the server's)
//     "reconnect_attempt" data {attempt}           (Manager)
//     "reconnect"        data {attempt}            (Manager)
//     "reconnect_error"  data {message, ...}       (Manager)
//     "reconnect_failed" data null                 (Manager)
//     "upgrade"          data {transport}          (Engine, transport upgraded)
//   "transport"/"engine_id" are socket.io.engine.transport.name / socket.io.engine.id at the time
//   of the event (null when there is no engine).

import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import { io } from "socket.io-client";

const require = createRequire(import.meta.url);
let clientVersion = null;
try {
  clientVersion = require("socket.io-client/package.json").version;
} catch {
  clientVersion = null;
}

const sockets = new Map(); // id -> Socket
let seq = 0;
let closing = false;

// ---------------------------------------------------------------- output

function isForeignObject(v) {
  // Class instances other than errors and binary data (sockets, requests, events...): not data.
  if (!v || typeof v !== "object" || Array.isArray(v)) return false;
  if (v instanceof Error || v instanceof ArrayBuffer || ArrayBuffer.isView(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto !== null && proto !== Object.prototype;
}

function toPlain(value, depth = 0, seen = new WeakSet()) {
  if (value === undefined || value === null) return null;
  const t = typeof value;
  if (t === "bigint") return value.toString();
  if (t === "function" || t === "symbol") return null;
  if (t !== "object") return value;
  if (depth > 32) return "[too deep]";
  if (seen.has(value)) return "[circular]";
  seen.add(value);
  const child = (v) =>
    isForeignObject(v) && typeof v.toJSON !== "function"
      ? `[${v.constructor && v.constructor.name ? v.constructor.name : "object"}]`
      : toPlain(v, depth + 1, seen);
  try {
    if (value instanceof Error) {
      const res = { name: value.name, message: value.message };
      for (const k of Object.keys(value)) res[k] = child(value[k]);
      return res;
    }
    if (value instanceof ArrayBuffer) return { _binary: Buffer.from(value).toString("base64") };
    if (ArrayBuffer.isView(value)) {
      return { _binary: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
    }
    if (Array.isArray(value)) return value.map(child);
    if (typeof value.toJSON === "function") return toPlain(value.toJSON(), depth + 1, seen);
    const res = {};
    for (const k of Object.keys(value)) res[k] = child(value[k]);
    return res;
  } finally {
    seen.delete(value);
  }
}

function out(obj) {
  let line;
  try {
    line = JSON.stringify(obj);
  } catch (e) {
    line = JSON.stringify({ type: "error", message: `cannot serialise output: ${e && e.message}` });
  }
  process.stdout.write(line + "\n");
}

function reportError(message, req) {
  const msg = { type: "error", message: String(message) };
  if (req !== undefined) msg.req = req;
  out(msg);
}

function engineInfo(socket) {
  const engine = socket && socket.io ? socket.io.engine : null;
  return {
    transport: engine && engine.transport ? engine.transport.name : null,
    engine_id: engine && engine.id ? engine.id : null,
  };
}

function emitEvent(id, socket, event, data, extra = {}) {
  out({
    type: "event",
    id,
    event,
    data: toPlain(data),
    ...extra,
    ...engineInfo(socket),
    sid: socket && socket.id ? socket.id : null,
    seq: ++seq,
    ts: Date.now(),
  });
}

// ---------------------------------------------------------------- sockets

function errorData(err) {
  if (!err || typeof err !== "object") return { message: String(err), data: null };
  return {
    message: err.message === undefined ? null : err.message,
    data: toPlain(err.data),
    description: toPlain(err.description),
    type: err.type === undefined ? null : err.type,
  };
}

function watchEngine(id, socket, engine, watched) {
  if (!engine || watched.has(engine)) return;
  watched.add(engine);
  engine.on("upgrade", (transport) => {
    emitEvent(id, socket, "upgrade", { transport: transport && transport.name ? transport.name : null });
  });
}

function createSocket(id, url, options) {
  // trackSince (not a socket.io-client option): keep auth.since at the id of the newest
  // notification received, as a real client does, so every reconnection asks for what it missed.
  const { trackSince, ...clientOptions } = options;
  const opts = { forceNew: true, ...clientOptions };
  const socket = io(url, opts);
  if (trackSince) {
    socket.on("notification", (n) => {
      if (n && typeof n.id === "string" && (!socket.auth || !socket.auth.since || n.id > socket.auth.since)) {
        socket.auth = { ...(socket.auth || {}), since: n.id };
      }
    });
  }
  const manager = socket.io;
  const watched = new WeakSet();

  socket.on("connect", () => {
    watchEngine(id, socket, manager.engine, watched);
    emitEvent(id, socket, "connect", { sid: socket.id, recovered: Boolean(socket.recovered) });
  });
  socket.on("disconnect", (reason, description) => {
    emitEvent(id, socket, "disconnect", { reason, description: toPlain(description) });
  });
  socket.on("connect_error", (err) => {
    emitEvent(id, socket, "connect_error", errorData(err));
  });
  socket.onAny((event, ...args) => {
    let serverAck = false;
    if (args.length && typeof args[args.length - 1] === "function") {
      args.pop();
      serverAck = true;
    }
    const extra = {};
    if (args.length > 1) extra.args = toPlain(args);
    if (serverAck) extra.server_ack = true;
    emitEvent(id, socket, event, args.length ? args[0] : null, extra);
  });

  manager.on("open", () => watchEngine(id, socket, manager.engine, watched));
  manager.on("reconnect_attempt", (attempt) => emitEvent(id, socket, "reconnect_attempt", { attempt }));
  manager.on("reconnect", (attempt) => emitEvent(id, socket, "reconnect", { attempt }));
  manager.on("reconnect_error", (err) => emitEvent(id, socket, "reconnect_error", errorData(err)));
  manager.on("reconnect_failed", () => emitEvent(id, socket, "reconnect_failed", null));
  // The engine may already be opening; watch it too.
  watchEngine(id, socket, manager.engine, watched);
  return socket;
}

// socket.emit() refuses the names socket.io-client reserves; this builds the same EVENT packet
// (type 2) that emit() would, with an acknowledgement id when ackTimeout is set.
function emitRaw(socket, event, args, ackTimeout, done) {
  const packet = { type: 2, data: [event, ...args], options: { compress: true } };
  if (ackTimeout !== null) {
    const id = socket.ids++;
    const timer = setTimeout(() => {
      delete socket.acks[id];
      done("timeout");
    }, ackTimeout);
    socket.acks[id] = (...ackArgs) => {
      clearTimeout(timer);
      done(null, ackArgs.length ? ackArgs[0] : null);
    };
    packet.id = id;
  }
  socket.packet(packet);
}

function getSocket(cmd) {
  if (typeof cmd.id !== "string" || !cmd.id) throw new Error("missing \"id\"");
  const socket = sockets.get(cmd.id);
  if (!socket) throw new Error(`unknown socket id ${JSON.stringify(cmd.id)}`);
  return socket;
}

function status(id, socket) {
  return {
    id,
    connected: socket.connected,
    active: socket.active,
    sid: socket.id || null,
    ...engineInfo(socket),
  };
}

function isPlainObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

// ---------------------------------------------------------------- commands

const handlers = {
  ping() {
    return {};
  },

  connect(cmd) {
    if (typeof cmd.id !== "string" || !cmd.id) throw new Error("missing \"id\"");
    if (typeof cmd.url !== "string" || !cmd.url) throw new Error("missing \"url\"");
    if (cmd.options !== undefined && !isPlainObject(cmd.options)) throw new Error("\"options\" must be an object");
    const existing = sockets.get(cmd.id);
    if (existing) {
      if (existing.active) throw new Error(`socket id ${JSON.stringify(cmd.id)} is in use`);
      existing.offAny();
      existing.removeAllListeners();
      existing.io.removeAllListeners();
      existing.disconnect();
      sockets.delete(cmd.id);
    }
    const socket = createSocket(cmd.id, cmd.url, cmd.options || {});
    sockets.set(cmd.id, socket);
    return { id: cmd.id };
  },

  async emit(cmd, reply) {
    const socket = getSocket(cmd);
    if (cmd.raw ? cmd.event === undefined : typeof cmd.event !== "string" || !cmd.event) {
      throw new Error("missing \"event\"");
    }
    let args;
    if (cmd.args !== undefined) {
      if (!Array.isArray(cmd.args)) throw new Error("\"args\" must be an array");
      args = cmd.args;
    } else {
      args = cmd.data === undefined ? [] : [cmd.data];
    }
    const timeout = Number.isFinite(cmd.timeout) && cmd.timeout > 0 ? cmd.timeout : 5000;
    if (cmd.raw) {
      emitRaw(socket, cmd.event, args, cmd.ack ? timeout : null, (error, data) => {
        reply({ type: "ack", id: cmd.id, event: cmd.event, ...(error ? { error } : { data: toPlain(data) }) });
      });
      return cmd.ack ? undefined : {};
    }
    if (!cmd.ack) {
      socket.emit(cmd.event, ...args);
      return {};
    }
    // The acknowledgement is answered later; reply explicitly and tell the caller not to.
    socket
      .timeout(timeout)
      .emitWithAck(cmd.event, ...args)
      .then(
        (...ackArgs) => {
          const data = ackArgs.length ? ackArgs[0] : null;
          reply({ type: "ack", id: cmd.id, event: cmd.event, data: toPlain(data) });
        },
        (err) => {
          const message = err && err.message ? err.message : String(err);
          reply({
            type: "ack",
            id: cmd.id,
            event: cmd.event,
            error: /timed out/i.test(message) ? "timeout" : message,
          });
        },
      );
    return undefined;
  },

  set(cmd) {
    const socket = getSocket(cmd);
    if (cmd.path !== "auth" && cmd.path !== "query") throw new Error("\"path\" must be \"auth\" or \"query\"");
    if (cmd.value !== null && !isPlainObject(cmd.value)) throw new Error("\"value\" must be an object or null");
    if (cmd.path === "auth") {
      const base = cmd.merge && isPlainObject(socket.auth) ? socket.auth : {};
      socket.auth = cmd.value === null ? undefined : { ...base, ...cmd.value };
      return { auth: toPlain(socket.auth) };
    }
    const opts = socket.io.opts;
    const base = cmd.merge && isPlainObject(opts.query) ? opts.query : {};
    opts.query = cmd.value === null ? {} : { ...base, ...cmd.value };
    return { query: toPlain(opts.query) };
  },

  disconnect(cmd) {
    const socket = getSocket(cmd);
    socket.disconnect();
    return status(cmd.id, socket);
  },

  open(cmd) {
    const socket = getSocket(cmd);
    socket.connect();
    return status(cmd.id, socket);
  },

  drop(cmd) {
    const socket = getSocket(cmd);
    const engine = socket.io.engine;
    if (!engine || !engine.transport) throw new Error("no open transport");
    engine.transport.close();
    return {};
  },

  remove(cmd) {
    const socket = getSocket(cmd);
    socket.disconnect();
    socket.offAny();
    sockets.delete(cmd.id);
    return {};
  },

  status(cmd) {
    return status(cmd.id, getSocket(cmd));
  },

  close(cmd) {
    shutdown(cmd.req);
    return undefined;
  },
};

async function handleLine(line) {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    reportError(`invalid JSON: ${e.message}`);
    return;
  }
  if (!isPlainObject(cmd)) {
    reportError("a command must be a JSON object");
    return;
  }
  const req = cmd.req;
  let replied = false;
  const reply = (msg) => {
    if (replied) return;
    replied = true;
    if (req !== undefined) out({ ...msg, req });
    else if (msg.type === "error") out(msg);
  };
  try {
    const handler = typeof cmd.op === "string" && Object.hasOwn(handlers, cmd.op) ? handlers[cmd.op] : null;
    if (!handler) throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
    const result = await handler(cmd, reply);
    if (result !== undefined) reply({ type: "ok", op: cmd.op, ...result });
  } catch (e) {
    reply({ type: "error", op: typeof cmd.op === "string" ? cmd.op : null, message: e && e.message ? e.message : String(e) });
  }
}

function shutdown(req) {
  if (closing) return;
  closing = true;
  for (const socket of sockets.values()) {
    try {
      socket.disconnect();
    } catch {
      // ignore: we are leaving anyway
    }
  }
  sockets.clear();
  const msg = { type: "closed" };
  if (req !== undefined) msg.req = req;
  process.stdout.write(JSON.stringify(msg) + "\n", () => process.exit(0));
  // In case stdout never drains (reader gone), leave anyway.
  setTimeout(() => process.exit(0), 2000).unref();
}

process.on("uncaughtException", (e) => reportError(`uncaught: ${e && e.stack ? e.stack : e}`));
process.on("unhandledRejection", (e) => reportError(`unhandled rejection: ${e && e.stack ? e.stack : e}`));
process.stdout.on("error", () => process.exit(0)); // reader went away

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  handleLine(line).catch((e) => reportError(`internal: ${e && e.message ? e.message : e}`));
});
rl.on("close", () => shutdown());

out({ type: "ready", pid: process.pid, client_version: clientVersion, node: process.version });
