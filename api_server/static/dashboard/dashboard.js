// The notihub dashboard: a Socket.IO client of the hub, written to be read as an example.
//
// What a client needs to get right:
//  - authenticate in the handshake (token + content-language), and stop retrying when refused;
//  - pass `auth` as a function, so that every (re)connection sends the current token and `since`
//    (the newest notification id it holds): each reconnection then replays exactly what was missed;
//  - when the token ends (`session_expired`, or `token_expired` at a handshake), get a fresh one
//    (from the page's same-origin `token_url`, or from the person) and connect the same socket
//    again: the list stays, and `since` fills the gap;
//  - take the badge from the latest `unread_count` the server sent (init, notification,
//    notifications_read, notifications_deleted): the server computes it when it sends it;
//  - treat ids as the identity of a notification: merging by id makes replays harmless.
(function () {
  "use strict";

  const TEXT = {
    en: {
      language: "Language", signOut: "Sign out", signInTitle: "Sign in", token: "Token", signIn: "Sign in",
      signInHint: "Paste a user token (JWT). For local use: python -m shared.devtoken --sub u1 --roles instructor",
      notifications: "Notifications", filterLabel: "Type", allTypes: "All types", markAll: "Mark all read",
      empty: "Nothing here yet.", courseProgress: "Course progress",
      coursesHint: "Live from course.progressed events of the courses you teach.",
      markRead: "Mark read", delete: "Delete", connected: "Connected", offline: "Offline",
      connecting: "Connecting…", reconnecting: (n) => `Reconnecting (attempt ${n})…`,
      loading: "Loading…", end: "No older notifications.", resync: "Many notifications arrived while you were away: the list was reloaded.",
      refused: { unauthorized: "The token was refused.", token_expired: "The token has expired: sign in again.",
                 too_many_connections: "Too many open connections for this user." },
      sessionExpired: "Your session expired. Paste a new token to continue: the notifications you missed will follow.",
      expired: "Session expired", refreshing: "Renewing the session…",
      rateLimited: (s) => `Too many connection attempts: trying again in ${s} s…`,
      progress: (p) => `${p}%`, lesson: (t) => `Latest: ${t}`, noLesson: "No lesson yet",
      deleteFailed: "Could not delete the notification.", readLabel: (t) => `Mark “${t}” as read`,
      deleteLabel: (t) => `Delete “${t}”`,
    },
    ko: {
      language: "언어", signOut: "로그아웃", signInTitle: "로그인", token: "토큰", signIn: "로그인",
      signInHint: "사용자 토큰(JWT)을 붙여 넣으세요. 로컬에서는: python -m shared.devtoken --sub u1 --roles instructor",
      notifications: "알림", filterLabel: "유형", allTypes: "모든 유형", markAll: "모두 읽음으로 표시",
      empty: "아직 알림이 없습니다.", courseProgress: "강의 진도",
      coursesHint: "담당 강의의 course.progressed 이벤트가 실시간으로 표시됩니다.",
      markRead: "읽음", delete: "삭제", connected: "연결됨", offline: "오프라인",
      connecting: "연결 중…", reconnecting: (n) => `다시 연결 중 (${n}번째 시도)…`,
      loading: "불러오는 중…", end: "더 이전 알림이 없습니다.", resync: "자리를 비운 동안 알림이 많이 도착해 목록을 다시 불러왔습니다.",
      refused: { unauthorized: "토큰이 거부되었습니다.", token_expired: "토큰이 만료되었습니다. 다시 로그인하세요.",
                 too_many_connections: "이 사용자의 연결이 너무 많습니다." },
      sessionExpired: "세션이 만료되었습니다. 계속하려면 새 토큰을 붙여 넣으세요. 그동안 놓친 알림도 이어서 표시됩니다.",
      expired: "세션 만료됨", refreshing: "세션을 갱신하는 중…",
      rateLimited: (s) => `연결 시도가 너무 많습니다. ${s}초 후에 다시 시도합니다…`,
      progress: (p) => `${p}%`, lesson: (t) => `최근: ${t}`, noLesson: "아직 수강한 레슨 없음",
      deleteFailed: "알림을 삭제하지 못했습니다.", readLabel: (t) => `“${t}” 읽음으로 표시`,
      deleteLabel: (t) => `“${t}” 삭제`,
    },
  };
  const TYPES = ["post.created", "comment.created", "comment.replied", "post.liked", "user.followed",
                 "moderation.penalized", "course.progressed"];
  const PAGE = 20;

  const $ = (id) => document.getElementById(id);
  const state = {
    token: null, claims: {}, lang: "en", socket: null,
    tokenUrl: null,         // same-origin path that answers {token} (the page's ?token_url=)
    expired: false,         // the token ended: waiting for a fresh one before connecting again
    renewing: false,        // connecting with a token from token_url, not yet accepted
    retryTimer: null,       // pending connect() after a rate_limited refusal
    items: new Map(),       // id -> notification, the one copy of each
    newest: null,           // newest id held: sent as auth.since
    cursor: null, exhausted: false, loading: false, generation: 0,
    unread: 0, filter: "",
    courses: new Map(),     // course id -> {title, students: Map(student id -> {...})}
  };

  const t = (key) => TEXT[state.lang][key];

  // ---- token and language ------------------------------------------------------------------

  function decodeClaims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(decodeURIComponent(escape(atob(part))));
    } catch (e) {
      return {};
    }
  }

  function sameOriginPath(value) {
    // Only a path of this site: one leading "/", never "//host" or "/\host", never a scheme.
    if (typeof value !== "string" || !/^\/(?![\/\\])/.test(value)) return null;
    try {
      const url = new URL(value, window.location.origin);
      return url.origin === window.location.origin ? url.pathname + url.search : null;
    } catch (e) {
      return null;
    }
  }

  function takeTokenFromAddress() {
    // Development convenience: ?token=… signs in, then leaves the address bar (and history).
    const url = new URL(window.location.href);
    const token = url.searchParams.get("token");
    if (token) {
      url.searchParams.delete("token");
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    return token;
  }

  function applyLanguage() {
    document.documentElement.lang = state.lang;
    $("lang").value = state.lang;
    document.querySelectorAll("[data-i18n]").forEach((el) => {
      const value = t(el.dataset.i18n);
      if (typeof value === "string") el.textContent = value;
    });
    const filter = $("filter");
    filter.querySelectorAll("option[data-type]").forEach((o) => o.remove());
    for (const type of TYPES) {
      const option = document.createElement("option");
      option.value = type;
      option.dataset.type = type;
      option.textContent = type;
      filter.appendChild(option);
    }
    filter.value = state.filter;
  }

  // ---- connection state ---------------------------------------------------------------------

  function setConnection(kind, text) {
    const conn = $("conn");
    conn.dataset.state = kind;
    $("conn-text").textContent = text;
    const engine = state.socket && state.socket.io.engine;
    conn.dataset.engine = kind === "connected" && engine ? engine.id : "";
  }

  // ---- the list -----------------------------------------------------------------------------

  function setUnread(count) {
    if (typeof count !== "number") return;
    state.unread = count;
    const badge = $("badge");
    badge.textContent = String(count);
    badge.dataset.count = String(count);
    document.title = count ? `(${count}) notihub · dashboard` : "notihub · dashboard";
  }

  function remember(n) {
    state.items.set(n.id, n);
    // What the next (re)connection asks the server to replay from (read by handshakeAuth).
    if (!state.newest || n.id > state.newest) state.newest = n.id;
    if (n.type === "course.progressed") trackProgress(n);
  }

  function formatTime(iso) {
    const date = new Date(iso);
    return date.toLocaleString(state.lang === "ko" ? "ko-KR" : "en-US",
                               { dateStyle: "medium", timeStyle: "short" });
  }

  function renderItem(n) {
    const li = $("item-template").content.firstElementChild.cloneNode(true);
    li.dataset.id = n.id;
    li.dataset.type = n.type;
    li.classList.toggle("unread", !n.read);
    li.querySelector(".type").textContent = n.type;
    const title = li.querySelector(".title");
    title.textContent = n.title;
    // Only same-site paths and http(s) links; anything else stays plain text.
    // A path of this site or an http(s) URL; never "//host" or "/\host", which leave the site.
    if (n.url && /^(\/(?![\/\\])|https?:\/\/)/.test(n.url)) title.href = n.url;
    const body = li.querySelector(".body");
    body.textContent = n.body || "";
    body.hidden = !n.body;
    const time = li.querySelector("time");
    time.dateTime = n.created_at;
    time.textContent = formatTime(n.created_at);
    const read = li.querySelector(".read");
    read.textContent = t("markRead");
    read.setAttribute("aria-label", t("readLabel")(n.title));
    read.hidden = n.read;
    read.addEventListener("click", () => markRead([n.id]));
    const del = li.querySelector(".delete");
    del.textContent = t("delete");
    del.setAttribute("aria-label", t("deleteLabel")(n.title));
    del.addEventListener("click", () => remove(n.id));
    return li;
  }

  function render() {
    const list = $("list");
    const shown = [...state.items.values()]
      .filter((n) => !state.filter || n.type === state.filter)
      .sort((a, b) => (a.id < b.id ? 1 : -1));
    list.replaceChildren(...shown.map(renderItem));
    $("empty").hidden = shown.length > 0 || !state.exhausted;
    $("sentinel").textContent = state.exhausted ? t("end") : t("loading");
  }

  function merge(notifications) {
    notifications.forEach(remember);
    render();
  }

  async function loadMore() {
    if (state.loading || state.exhausted || !state.socket || !state.socket.connected) return;
    state.loading = true;
    const generation = state.generation;
    try {
      const answer = await state.socket.timeout(10000).emitWithAck("list", { cursor: state.cursor, limit: PAGE });
      if (generation !== state.generation || !answer.ok) return;
      state.cursor = answer.next_cursor;
      state.exhausted = answer.next_cursor === null;
      merge(answer.notifications);
    } catch (e) {
      // No answer (the connection dropped): the next connect loads again.
    } finally {
      state.loading = false;
    }
    if (!state.exhausted && sentinelVisible()) loadMore();
  }

  function sentinelVisible() {
    const rect = $("sentinel").getBoundingClientRect();
    return rect.top < window.innerHeight + 200;
  }

  function resetList() {
    state.generation += 1;
    state.items.clear();
    state.newest = null;
    state.cursor = null;
    state.exhausted = false;
    state.loading = false;
    state.courses.clear();
    renderCourses();
    render();
  }

  // ---- actions ------------------------------------------------------------------------------

  async function markRead(ids) {
    const answer = await state.socket.timeout(10000).emitWithAck("mark_read", { ids });
    if (answer.ok) setUnread(answer.unread_count);
  }

  async function markAll() {
    const answer = await state.socket.timeout(10000).emitWithAck("mark_all_read", {});
    if (answer.ok) setUnread(answer.unread_count);
  }

  async function remove(id) {
    const response = await fetch(`/v1/me/notifications/${encodeURIComponent(id)}`, {
      method: "DELETE", headers: { Authorization: `Bearer ${state.token}` },
    });
    if (response.status === 204 || response.status === 404) {
      state.items.delete(id);
      render();
    } else {
      window.alert(t("deleteFailed"));
    }
  }

  function applyRead({ ids, all, unread_count }) {
    for (const n of state.items.values()) {
      if (all || ids.includes(n.id)) n.read = true;
    }
    setUnread(unread_count);
    render();
  }

  function applyDeleted({ ids, unread_count }) {
    ids.forEach((id) => state.items.delete(id));
    setUnread(unread_count);
    render();
  }

  // ---- instructors: course progress ---------------------------------------------------------

  function isInstructor() {
    return Array.isArray(state.claims.roles) && state.claims.roles.includes("instructor");
  }

  function trackProgress(n) {
    const d = n.data || {};
    if (!d.course || !d.student) return;
    const course = state.courses.get(d.course.id) || { title: d.course.title || d.course.id, students: new Map() };
    const previous = course.students.get(d.student.id);
    if (!previous || previous.at <= n.id) {
      course.students.set(d.student.id, {
        name: d.student.name || d.student.id, lesson: d.lesson ? d.lesson.title || d.lesson.id : null,
        progress: Math.round((d.progress || 0) * 100), at: n.id,
      });
    }
    state.courses.set(d.course.id, course);
    renderCourses();
  }

  function renderCourses() {
    $("courses").hidden = !isInstructor();
    const container = $("course-list");
    const blocks = [...state.courses.entries()].sort((a, b) => a[1].title.localeCompare(b[1].title)).map(([id, course]) => {
      const block = document.createElement("section");
      block.className = "course";
      block.dataset.course = id;
      const heading = document.createElement("h3");
      heading.textContent = course.title;
      block.appendChild(heading);
      for (const [studentId, s] of [...course.students.entries()].sort((a, b) => a[1].name.localeCompare(b[1].name))) {
        const row = document.createElement("div");
        row.className = "student";
        row.dataset.student = studentId;
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = s.name;
        const pct = document.createElement("span");
        pct.className = "pct";
        pct.textContent = t("progress")(s.progress);
        const bar = document.createElement("progress");
        bar.max = 100;
        bar.value = s.progress;
        bar.setAttribute("aria-label", `${s.name}: ${s.progress}%`);
        const lesson = document.createElement("span");
        lesson.className = "lesson";
        lesson.textContent = s.lesson ? t("lesson")(s.lesson) : t("noLesson");
        row.append(name, pct, bar, lesson);
        block.appendChild(row);
      }
      return block;
    });
    container.replaceChildren(...blocks);
  }

  // ---- the socket ---------------------------------------------------------------------------

  // Called by socket.io-client before every (re)connection: always the current token and since.
  function handshakeAuth(cb) {
    cb({ token: state.token, since: state.newest, lang: state.lang });
  }

  function connect() {
    setConnection("reconnecting", t("connecting"));
    const socket = io("/notifications", {
      path: "/socket.io/",
      // The token travels in `auth` only: a query would keep the first one for good.
      query: { "content-language": state.lang },
      auth: handshakeAuth,
      reconnection: true,
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
    });
    state.socket = socket;
    window.notihubDashboard = { state, socket };

    socket.on("connect", () => {
      state.renewing = false;
      setConnection("connected", t("connected"));
    });
    socket.io.on("open", () => socket.io.engine.on("upgrade", () => {
      if (socket.connected) setConnection("connected", t("connected"));
    }));
    socket.on("disconnect", (reason) => {
      if (reason === "io client disconnect") return;
      // The token ended (session_expired came first): connect again once there is a fresh one.
      if (state.expired) return;
      setConnection("reconnecting", t("reconnecting")(1));
      // The server ended the session: socket.io-client leaves reconnecting to the page then.
      if (reason === "io server disconnect") socket.connect();
    });
    socket.io.on("reconnect_attempt", (attempt) => setConnection("reconnecting", t("reconnecting")(attempt)));
    socket.on("connect_error", (err) => {
      const data = (err && err.data) || {};
      const code = data.code;
      if (code === "token_expired") {
        sessionExpired();
        return;
      }
      if (code === "rate_limited") {
        retryLater(data.retry_after);
        return;
      }
      if (code) {
        // Refused by the server: retrying with the same token cannot help.
        signOut(TEXT[state.lang].refused[code] || data.message);
        return;
      }
      setConnection(navigator.onLine ? "reconnecting" : "offline", navigator.onLine ? t("connecting") : t("offline"));
    });
    socket.on("session_expired", sessionExpired);

    socket.on("init", ({ unread_count, notifications }) => {
      setUnread(unread_count);
      merge(notifications);
      if (state.cursor === null && !state.exhausted) loadMore();
    });
    socket.on("notification", (n) => {
      merge([n]);
      setUnread(n.unread_count);
    });
    socket.on("notifications_read", applyRead);
    socket.on("notifications_deleted", applyDeleted);
    socket.on("resync_required", () => {
      // More was missed than the server replays: start the list again from the newest.
      const notice = $("resync");
      notice.textContent = t("resync");
      notice.hidden = false;
      resetList();
      loadMore();
    });
  }

  // ---- the end of a token, and limits --------------------------------------------------------

  async function fetchToken() {
    // The page's own origin answers {token} (a session cookie may stand behind it).
    const response = await fetch(state.tokenUrl, {
      credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" },
    });
    if (!response.ok) throw new Error(`token_url answered ${response.status}`);
    const body = await response.json();
    if (!body || typeof body.token !== "string" || !body.token.trim()) throw new Error("token_url gave no token");
    return body.token.trim();
  }

  async function sessionExpired() {
    // The list and `since` stay: the next connection of this socket replays what is missed meanwhile.
    if (state.expired || !state.socket) return;
    state.expired = true;
    const socket = state.socket;
    // A token from token_url that is refused as expired at once: ask the person, do not loop.
    const renewalFailed = state.renewing;
    state.renewing = false;
    if (state.tokenUrl && !renewalFailed) {
      setConnection("reconnecting", t("refreshing"));
      try {
        const token = await fetchToken();
        if (socket !== state.socket) return;  // signed out meanwhile
        if (decodeClaims(token).sub === state.claims.sub) {
          state.renewing = true;
          resume(token);
          return;
        }
      } catch (e) {
        // No fresh token from there: ask the person instead.
      }
      if (socket !== state.socket) return;
    }
    askForToken();
  }

  function askForToken() {
    setConnection("expired", t("expired"));
    $("signin").hidden = false;
    $("signin-error").textContent = t("sessionExpired");
    $("signin-error").dataset.reason = "session_expired";
    $("token").value = "";
    $("token").focus();
  }

  function resume(token) {
    // A fresh token of the same user: connect the same socket again, with the list and `since` kept.
    state.token = token;
    state.claims = decodeClaims(token);
    state.expired = false;
    sessionStorage.setItem("notihub.token", token);
    $("signin").hidden = true;
    $("signin-error").textContent = "";
    delete $("signin-error").dataset.reason;
    setConnection("reconnecting", t("connecting"));
    state.socket.connect();
  }

  function retryLater(seconds) {
    // Too many handshakes: wait as long as the server asks, then try again (still signed in).
    const wait = Math.max(1, Math.ceil(Number(seconds) || 1));
    setConnection("reconnecting", t("rateLimited")(wait));
    clearTimeout(state.retryTimer);
    const socket = state.socket;
    state.retryTimer = setTimeout(() => {
      state.retryTimer = null;
      if (socket === state.socket && !socket.connected && !state.expired) socket.connect();
    }, wait * 1000);
  }

  // ---- sign in and out ----------------------------------------------------------------------

  function submitToken(token) {
    token = token.trim();
    // While the session is only expired, the same user's new token resumes it (list kept);
    // anybody else's starts afresh.
    if (state.expired && state.socket && decodeClaims(token).sub === state.claims.sub) resume(token);
    else signIn(token);
  }

  // Ends the current session, if any: its socket, a pending retry, an expired state.
  function endSession() {
    if (state.socket) {
      state.socket.disconnect();
      state.socket = null;
    }
    clearTimeout(state.retryTimer);
    state.expired = false;
    state.renewing = false;
    delete $("signin-error").dataset.reason;
  }

  function signIn(token) {
    endSession();
    $("signin-error").textContent = "";
    state.token = token.trim();
    state.claims = decodeClaims(state.token);
    sessionStorage.setItem("notihub.token", state.token);
    $("signin").hidden = true;
    $("app").hidden = false;
    $("signout").hidden = false;
    resetList();
    connect();
  }

  function signOut(message) {
    endSession();
    sessionStorage.removeItem("notihub.token");
    state.token = null;
    state.claims = {};
    resetList();
    setUnread(0);
    $("app").hidden = true;
    $("signout").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    setConnection("offline", t("offline"));
    $("token").focus();
  }

  function switchLanguage(lang) {
    state.lang = lang;
    localStorage.setItem("notihub.lang", lang);
    applyLanguage();
    renderCourses();
    render();
    const error = $("signin-error");
    if (error.dataset.reason === "session_expired") error.textContent = t("sessionExpired");
    if (!state.socket) return;
    // Texts are rendered by the server in the handshake's language: reconnect with the new one
    // and load the list again in it (once there is a fresh token, if the session expired).
    state.socket.disconnect();
    state.socket.io.opts.query = { ...state.socket.io.opts.query, "content-language": lang };
    resetList();
    if (state.expired) setConnection("expired", t("expired"));
    else if (!state.retryTimer) state.socket.connect();  // else when the rate limit allows
  }

  // ---- start --------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    state.lang = localStorage.getItem("notihub.lang") || (navigator.language || "en").slice(0, 2);
    if (!TEXT[state.lang]) state.lang = "en";
    applyLanguage();
    setConnection("offline", t("offline"));

    $("lang").addEventListener("change", (e) => switchLanguage(e.target.value));
    $("filter").addEventListener("change", (e) => { state.filter = e.target.value; render(); });
    $("mark-all").addEventListener("click", markAll);
    $("signout").addEventListener("click", () => signOut(""));
    $("signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("token").value;
      if (token.trim()) submitToken(token);
    });
    window.addEventListener("offline", () => setConnection("offline", t("offline")));
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) loadMore();
    }, { rootMargin: "200px" }).observe($("sentinel"));

    state.tokenUrl = sameOriginPath(new URL(window.location.href).searchParams.get("token_url"));
    const token = takeTokenFromAddress() || sessionStorage.getItem("notihub.token");
    if (token) signIn(token);
    else if (state.tokenUrl) fetchToken().then(signIn, () => signOut(""));
    else signOut("");
  });
})();
