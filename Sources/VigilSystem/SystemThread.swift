import CVigil
import Glibc
import Synchronization
import VigilCore

/// A thread of the operating system running one closure, which can be waited for with a
/// deadline (Foundation's `Thread` is not part of FoundationEssentials, docs/architecture.md,
/// "Foundation: Essentials only"). The thread is detached: nothing needs to join it.
/// Sendable: its one changing fact, whether the closure returned, is an `Atomic`.
public final class SystemThread: Sendable {
    private let finished = Atomic<Bool>(false)

    private init() {}

    /// Starts `body` on a new thread named `name` (the kernel keeps 15 bytes of it).
    /// Fails only when the system refuses a thread (`pthread_create`).
    @discardableResult
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) -> SystemThread {
        let thread = SystemThread()
        let job = Job(name: name, thread: thread, body: body)
        let context = Unmanaged.passRetained(job).toOpaque()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        defer { pthread_attr_destroy(&attr) }
        var tid = pthread_t()
        let rc = pthread_create(&tid, &attr, { context in
            let job = Unmanaged<Job>.fromOpaque(context!).takeRetainedValue()
            cvigil_name_thread(job.name)
            job.body()
            job.thread.finished.store(true, ordering: .releasing)
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Job>.fromOpaque(context).release()
            throw SystemError("pthread_create", errno: rc, subject: name)
        }
        return thread
    }

    /// Waits until the closure returned or `deadline` passed (looking every 5 ms: this is for
    /// shutdowns, not for hot paths); true when it returned.
    public func join(until deadline: BootInstant) -> Bool {
        while !finished.load(ordering: .acquiring) {
            let left = deadline - Clock.boot()
            if left <= .zero { return false }
            ThisProcess.pause(min(left, .milliseconds(5)))
        }
        return true
    }

    private final class Job: Sendable {
        let name: String
        let thread: SystemThread
        let body: @Sendable () -> Void
        init(name: String, thread: SystemThread, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.thread = thread
            self.body = body
        }
    }
}

/// One value per thread, released when its thread ends (`pthread_key_create` with a
/// destructor; what Foundation's `Thread.threadDictionary` was used for).
/// Sendable: it holds only the key; each thread's value is its own.
public final class ThreadLocal<Value: AnyObject>: Sendable {
    private let key: pthread_key_t

    public init() {
        var k = pthread_key_t()
        pthread_key_create(&k) { value in
            if let value { Unmanaged<AnyObject>.fromOpaque(value).release() }
        }
        key = k
    }

    /// Values still held by running threads are not released after this (their threads'
    /// destructors no longer run for a deleted key).
    deinit { pthread_key_delete(key) }

    /// The calling thread's value.
    public var value: Value? {
        guard let p = pthread_getspecific(key) else { return nil }
        return Unmanaged<AnyObject>.fromOpaque(p).takeUnretainedValue() as? Value
    }

    /// Sets the calling thread's value (the previous one is released).
    public func set(_ value: Value?) {
        let old = pthread_getspecific(key)
        _ = pthread_setspecific(key, value.map { Unmanaged<AnyObject>.passRetained($0).toOpaque() })
        if let old { Unmanaged<AnyObject>.fromOpaque(old).release() }
    }
}
