import FoundationEssentials
import Synchronization
import VigilCore
import VigilStore
import VigilSystem

/// Commands from the Matrix room: a /sync loop on its own thread (long-poll with
/// `sync_timeout`, so it never touches the bridge's loop). The since-token is persisted in
/// `chat_state` in the same transaction as the commands it brought, so each command is taken
/// once across restarts. The first sync (no token yet) skips history. When a /sync timeline is
/// `limited` (more was said while we were away than it holds), the gap is read back with
/// `/messages` before anything is stored (docs/chat.md, "Matrix"). Only `m.room.message`
/// events in the configured room that look like commands are considered; the sender must be
/// on the allow-list (exact user id), others are journaled and ignored.
///
/// Sendable: what changes (stopping, the thread, the last failure, when ignored senders were
/// journaled) is behind one `Mutex`, `state`; the rest is constant.
package final class MatrixPoller: Sendable {
    let session: MatrixSession
    let stateDir: StateDirectory
    let journal: Journal
    let onCommand: @Sendable () -> Void
    private let client = HTTPClient()
    private let state = Mutex(State())
    /// While it says true the poller does not sync (the runner's standby poller syncs only
    /// while the bridge cannot).
    let paused: (@Sendable () -> Bool)?

    /// Only under `state`'s lock.
    private struct State {
        var stopping = false
        var thread: SystemThread?
        var failure: String?
        var ignoredJournaled: [BootInstant] = []
        var unreadableJournaled: [BootInstant] = []
        var journaledProblem: String?
    }

    /// The last /sync failure, while failing.
    var lastError: String? {
        get { state.withLock { $0.failure } }
        set { state.withLock { $0.failure = newValue } }
    }

    init(session: MatrixSession, stateDir: StateDirectory, journal: Journal, paused: (@Sendable () -> Bool)? = nil,
         onCommand: @escaping @Sendable () -> Void) {
        self.session = session
        self.stateDir = stateDir
        self.journal = journal
        self.paused = paused
        self.onCommand = onCommand
    }

    func start() {
        do {
            let thread = try SystemThread.start(name: "vigil-matrix-sync") { [self] in self.run() }
            state.withLock { $0.thread = thread }
        } catch {
            state.withLock { $0.failure = "could not start its thread: \(error)" }
        }
    }

    func stop() {
        state.withLock { $0.stopping = true }
        client.cancel()
    }

    /// Waits for the thread to end (after `stop`). False when it did not by the deadline.
    func join(until deadline: BootInstant) -> Bool {
        guard let thread = state.withLock({ $0.thread }) else { return true }
        return thread.join(until: deadline)
    }

    private var isStopping: Bool { state.withLock { $0.stopping } }

    /// Sleeps up to `span`, ending early on stop.
    private func pause(_ span: TimeSpan) {
        let end = Clock.boot() + span
        while !isStopping, Clock.boot() < end {
            ThisProcess.pause(TimeSpan(nanoseconds: min(50_000_000, max(1_000_000, (end - Clock.boot()).nanoseconds))))
        }
    }

    package static func filter(roomID: String, limit: Int) -> String {
        let f: JSONValue = [
            "room": [
                "rooms": [.string(roomID)],
                "timeline": ["limit": .int(Int64(limit)), "types": ["m.room.message", "m.room.encrypted"]],
                "state": ["types": []], "ephemeral": ["types": []], "account_data": ["types": []],
            ],
            "presence": ["types": []],
            "account_data": ["types": []],
        ]
        return f.jsonString
    }

    private func run() {
        var db: Database?
        var failures = 0
        while !isStopping {
            if let paused, paused() {
                pause(.milliseconds(250))
                continue
            }
            do {
                if db == nil { db = try Database(path: stateDir.database, busyTimeout: 2) }
                let inbox = ChatInbox(db!)
                try syncOnce(inbox)
                failures = 0
                lastError = nil
            } catch let f as MatrixSession.Failure {
                if case .cancelled = f { break }
                failures += 1
                let why: String
                switch f {
                case .retry(let w, _), .failed(let w): why = w
                case .cancelled: why = "cancelled"
                }
                noteFailure(why, failures: failures)
                pause(.seconds(min(10, 0.5 * Double(1 << min(failures, 6)))))
            } catch {
                failures += 1
                if (error as? Database.Error)?.isCorrupt == true { db = nil }
                noteFailure("\(error)", failures: failures)
                pause(.seconds(min(10, 0.5 * Double(1 << min(failures, 6)))))
            }
        }
    }

    private func noteFailure(_ why: String, failures: Int) {
        lastError = why
        // A room that cannot be reached: journaled when the problem starts or changes.
        if let p = session.roomProblem, p.hasPrefix("room not reachable"),
           state.withLock({ s in defer { s.journaledProblem = p }; return s.journaledProblem != p }) {
            journal.append(.chatRoomUnreachable, ["adapter": "matrix", "room": .string(session.config.room),
                                                     "error": .string(ChatText.brief(p, maxLength: 300))])
        }
        // Journal the first failure of a run of them and then every 20th, not every retry.
        if failures == 1 || failures % 20 == 0 {
            journal.append(.chatSyncFailed, ["adapter": "matrix", "error": .string(ChatText.brief(why, maxLength: 300)),
                                                "failures": .int(Int64(failures))])
        }
    }

    /// Back-fill pages: events asked for per `/messages` call, and the most events one catch-up
    /// reads (older ones are not read; journaled).
    static let backfillPageSize = 250
    static let backfillMaxEvents = 5000

    /// The room event filter of back-fill pages: messages only.
    static let backfillFilter: String = (["types": ["m.room.message", "m.room.encrypted"], "lazy_load_members": true] as JSONValue).jsonString

    func syncOnce(_ inbox: ChatInbox) throws {
        let ready = try session.ensureReady(client, inbox: inbox)
        let since = try inbox.value(session.sinceStateName)
        var query: [(String, String)] = []
        if let since {
            query.append(("since", since))
            query.append(("timeout", String(Int(session.config.syncTimeout.milliseconds))))
            query.append(("filter", MatrixPoller.filter(roomID: ready.room, limit: 50)))
        } else {
            // First sync: take the position, skip history.
            query.append(("timeout", "0"))
            query.append(("filter", MatrixPoller.filter(roomID: ready.room, limit: 1)))
        }
        let r = try session.call(client, "GET", "/_matrix/client/v3/sync", query: query, token: ready.token,
                                 timeout: session.config.timeout + session.config.syncTimeout, maxBody: session.config.maxSyncBytes)
        guard let next = r["next_batch"]?.stringValue else { throw MatrixSession.Failure.retry("matrix /sync: no next_batch", after: nil) }
        var events: [JSONValue] = []
        var backfill: Backfill?
        if let since {
            let timeline = r["rooms"]?["join"]?[ready.room]?["timeline"]
            if case .array(let e)? = timeline?["events"] { events = e }
            // A limited timeline has a gap before its first event: read it back to `since`, so
            // no command said while we were away is missed.
            if timeline?["limited"]?.boolValue == true, let prev = timeline?["prev_batch"]?.stringValue {
                let b = try readBack(room: ready.room, token: ready.token, from: prev, to: since, inbox: inbox)
                events = b.events + events
                backfill = b
            }
        }
        if !session.encryptionKnown { try checkEncryption(room: ready.room, token: ready.token, inbox: inbox) }
        var commands: [(sender: String, body: String, eventID: String, saidWall: Double?, meta: InboxMeta)] = []
        var ignored: [(sender: String, body: String)] = []
        var answers: [(item: OutboxItem, told: String?, event: JournalEvent, fields: [String: JSONValue])] = []
        var unreadable: [(sender: String, eventID: String)] = []
        var seen = Set<String>()
        let me = session.ownUserID
        let config = session.config
        for e in events {
            guard let sender = e["sender"]?.stringValue, sender != me,
                  let eventID = e["event_id"]?.stringValue, seen.insert(eventID).inserted else { continue }
            let role = config.role(of: sender)
            if e["type"]?.stringValue == "m.room.encrypted" {
                // Vigil does no end-to-end encryption: it cannot read this (docs/chat.md,
                // "Encrypted rooms"); journaled for people it would obey, never run.
                if role != .stranger { unreadable.append((sender, eventID)) }
                continue
            }
            guard e["type"]?.stringValue == "m.room.message", let body = e["content"]?["body"]?.stringValue else { continue }
            // Only what a person types is a command: never a notice (bots, Vigil's own kind of
            // message: no bot-to-bot loops) nor an emote (docs/chat.md, "Commands").
            guard e["content"]?["msgtype"]?.stringValue == "m.text" else { continue }
            let edit = MatrixPoller.editedCommand(e["content"])
            guard edit != nil || ChatCommand.parse(body) != nil else { continue } // chatter
            switch role {
            case .operator, .viewer:
                if let edit {
                    // An edit is not a new command: answered, not run (docs/chat.md, "Edits").
                    let item = OutboxItem(key: "edit-not-run:\(eventID)", adapter: "matrix", body: MatrixPoller.editReply,
                                          priority: .reply, meta: OutboxMeta(replyTo: eventID, thread: MatrixPoller.inboxMeta(e, room: ready.room).thread,
                                                                            room: config.room))
                    answers.append((item, nil, .chatEditNotRun, ["adapter": "matrix", "sender": .string(ChatText.brief(sender, maxLength: 100)),
                                                                 "text": .string(ChatText.brief(edit, maxLength: 100)), "event_id": .string(eventID)]))
                    continue
                }
                let said = e["origin_server_ts"]?.doubleValue.map { $0 / 1000 }
                commands.append((sender, ChatCommand.inboxBody(body), eventID, said, MatrixPoller.inboxMeta(e, room: ready.room)))
            case .stranger:
                ignored.append((sender, body))
                if config.tellStrangers {
                    // Once per stranger, ever: remembered in chat_state with the reply.
                    let item = OutboxItem(key: "stranger:\(sender)", adapter: "matrix", body: MatrixPoller.strangerReply, priority: .reply,
                                          meta: OutboxMeta(replyTo: eventID, room: config.room))
                    answers.append((item, MatrixPoller.toldStateName(sender), .chatStrangerTold,
                                    ["adapter": "matrix", "sender": .string(ChatText.brief(sender, maxLength: 100))]))
                }
            }
        }
        if r["rooms"]?["invite"]?[ready.room] != nil || r["rooms"]?["leave"]?[ready.room] != nil { session.notJoined() }
        var told: [(event: JournalEvent, fields: [String: JSONValue])] = []
        try inbox.db.write {
            for c in commands {
                _ = try inbox.addInTransaction(adapter: "matrix", sender: c.sender, body: c.body, originID: c.eventID, saidWall: c.saidWall,
                                               meta: c.meta)
            }
            for a in answers {
                if let name = a.told {
                    guard try inbox.value(name) == nil else { continue }
                    try inbox.setValueInTransaction(name, "told")
                }
                if try Outbox.insertLocked(inbox.db, a.item) { told.append((a.event, a.fields)) }
            }
            try inbox.setValueInTransaction(session.sinceStateName, next)
        }
        for t in told { journal.append(t.event, t.fields) }
        if !told.isEmpty { ChatKick.poke(stateDir, journal: journal) }
        for u in unreadable { journalUnreadable(sender: u.sender, eventID: u.eventID) }
        if let b = backfill {
            var fields: [String: JSONValue] = ["adapter": "matrix", "events": .int(Int64(b.events.count)), "pages": .int(Int64(b.pages)),
                                               "commands": .int(Int64(commands.count)), "truncated": .bool(b.truncated)]
            if b.truncated {
                fields["note"] = .string("more than \(MatrixPoller.backfillMaxEvents) messages while away; older ones were not read")
            }
            journal.append(.chatBackfill, fields)
        }
        for i in ignored { journalIgnored(sender: i.sender, body: i.body) }
        if !commands.isEmpty { onCommand() }
    }

    /// The answer to an edited command (docs/chat.md, "Edits").
    static let editReply = "edits are not run; send the command again"
    /// The one answer a stranger gets with `tell_strangers` (docs/chat.md, "Roles").
    static let strangerReply = "not allowed: you are not on this bot's lists, nothing was run"

    /// Where `tell_strangers` remembers that `sender` was answered (chat_state).
    static func toldStateName(_ sender: String) -> String { "matrix.told-stranger|\(sender)" }

    /// When `content` is an edit (Matrix `m.replace`: `m.new_content` or `m.relates_to.rel_type`,
    /// or a client's fallback body `* /command`) of something that looks like a command: the
    /// edited text. Nil for anything else (a plain command, an edit of chatter). Pure.
    static func editedCommand(_ content: JSONValue?) -> String? {
        guard let content else { return nil }
        let body = content["body"]?.stringValue ?? ""
        let isReplace = content["m.new_content"] != nil || content["m.relates_to"]?["rel_type"]?.stringValue == "m.replace"
        let fallback = body.hasPrefix("* /") || body.hasPrefix("* !")
        guard isReplace || fallback else { return nil }
        let newBody = content["m.new_content"]?["body"]?.stringValue
        let candidates = [newBody, body.hasPrefix("* ") ? String(body.dropFirst(2)) : body].compactMap { $0 }
        return candidates.first { ChatCommand.parse($0) != nil }
    }

    /// Looks once at the room's state for `m.room.encryption` (`GET /rooms/{room}/state/m.room.encryption/`:
    /// 200 = encrypted, 404 = not). When encrypted, says so once in the room (plain text,
    /// idempotent key per room) and journals it (docs/chat.md, "Encrypted rooms").
    func checkEncryption(room: String, token: String, inbox: ChatInbox) throws {
        let path = "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(room))/state/m.room.encryption/"
        var encrypted = false
        do {
            _ = try session.call(client, "GET", path, token: token)
            encrypted = true
        } catch {
            if case .retry(let why, _) = error, why.contains("HTTP 404") { encrypted = false } else { throw error }
        }
        guard encrypted else {
            session.setEncrypted(false)
            return
        }
        let item = OutboxItem(key: "room-encrypted:\(room)", adapter: "matrix", body: MatrixPoller.encryptedNotice, priority: .notice,
                              meta: OutboxMeta(room: session.config.room))
        let isNew = try inbox.db.write { try Outbox.insertLocked(inbox.db, item) }
        if isNew {
            journal.append(.chatRoomEncrypted, ["adapter": "matrix", "room": .string(room)])
            ChatKick.poke(stateDir, journal: journal)
        }
        session.setEncrypted(true)
    }

    /// What Vigil says (once) in an encrypted room.
    static let encryptedNotice = "This room is end-to-end encrypted. Vigil does not do encryption: it cannot read commands here "
        + "(they are not run). Its notifications still arrive, unencrypted. Use an unencrypted room for Vigil."

    /// Encrypted events are journaled at most 10 a minute, like ignored senders.
    private func journalUnreadable(sender: String, eventID: String) {
        guard withinJournalRate(\.unreadableJournaled) else { return }
        journal.append(.chatUnreadable, ["adapter": "matrix", "sender": .string(ChatText.brief(sender, maxLength: 100)),
                                           "event_id": .string(eventID), "reason": "encrypted (m.room.encrypted): Vigil cannot read it; not run"])
    }

    /// Where a command was said: its room, and the thread's root when it was said in a thread
    /// (`m.relates_to` with `rel_type: m.thread`), so the reply lands there too.
    static func inboxMeta(_ event: JSONValue, room: String) -> InboxMeta {
        let rel = event["content"]?["m.relates_to"]
        let thread = rel?["rel_type"]?.stringValue == "m.thread" ? rel?["event_id"]?.stringValue : nil
        return InboxMeta(thread: thread, room: room)
    }

    /// What one catch-up read: the gap's events, oldest first.
    struct Backfill {
        var events: [JSONValue] = []
        var pages = 0
        /// The bound was hit before the stored token was reached.
        var truncated = false
    }

    /// Pages back through the gap of a limited timeline: `GET /rooms/{room}/messages?dir=b`
    /// from the timeline's `prev_batch` to the stored since-token, until the server says there
    /// is no more (no `end`), the token stops moving, or a command already in the inbox is met
    /// (everything before it was taken). Bounded by `backfillMaxEvents`. Nothing is stored here:
    /// the caller commits the commands with the new since-token, so a failure part-way means
    /// the whole sync is tried again from the old token.
    func readBack(room: String, token: String, from: String, to since: String, inbox: ChatInbox) throws -> Backfill {
        var b = Backfill()
        var newestFirst: [JSONValue] = []
        var cursor = from
        let path = "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(room))/messages"
        // Pages can come back empty while more follow (the spec allows it); bound those too.
        let maxPages = 2 * (MatrixPoller.backfillMaxEvents / MatrixPoller.backfillPageSize) + 4
        paging: while true {
            if b.pages >= maxPages {
                b.truncated = true
                break
            }
            let page = try session.call(client, "GET", path, query: [
                ("dir", "b"), ("from", cursor), ("to", since), ("limit", String(MatrixPoller.backfillPageSize)),
                ("filter", MatrixPoller.backfillFilter),
            ], token: token, maxBody: session.config.maxSyncBytes)
            b.pages += 1
            guard case .array(let chunk)? = page["chunk"] else { break }
            for e in chunk {
                if let id = e["event_id"]?.stringValue, try inbox.contains(adapter: "matrix", originID: id) { break paging }
                newestFirst.append(e)
                if newestFirst.count >= MatrixPoller.backfillMaxEvents {
                    b.truncated = true
                    break paging
                }
            }
            guard let end = page["end"]?.stringValue, end != cursor else { break }
            cursor = end
        }
        b.events = newestFirst.reversed()
        return b
    }

    /// At most 10 entries of one kind a minute (`times`: when the last ones were written): true
    /// when this one may be journaled, and then counted.
    private func withinJournalRate(_ times: WritableKeyPath<State, [BootInstant]>) -> Bool {
        let now = Clock.boot()
        return state.withLock { s in
            s[keyPath: times].removeAll { now - $0 > .seconds(60) }
            guard s[keyPath: times].count < 10 else { return false }
            s[keyPath: times].append(now)
            return true
        }
    }

    /// Ignored senders are journaled, at most 10 a minute (a flood cannot fill the journal).
    private func journalIgnored(sender: String, body: String) {
        guard withinJournalRate(\.ignoredJournaled) else { return }
        journal.append(.chatIgnored, ["adapter": "matrix", "sender": .string(ChatText.brief(sender, maxLength: 100)),
                                        "text": .string(ChatText.brief(body, maxLength: 100)), "reason": "sender not on the allow-list nor a viewer"])
    }
}
