import CVigil
import Glibc
import VigilCore

/// A thread of the operating system running one closure, which can be waited for with a
/// deadline (Foundation's `Thread` is not part of FoundationEssentials, docs/architecture.md,
/// "Foundation: Essentials only"). The thread is detached: nothing needs to join it.
/// `@unchecked Sendable`: `finished` is read and written only under `lock`.
public final class SystemThread: @unchecked Sendable {
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let ended = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var finished = false

    private init() {
        pthread_mutex_init(lock, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(ended, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(ended)
        pthread_mutex_destroy(lock)
        lock.deallocate()
        ended.deallocate()
    }

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
            job.thread.markFinished()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Job>.fromOpaque(context).release()
            throw SystemError("pthread_create", errno: rc, subject: name)
        }
        return thread
    }

    /// Waits until the closure returned or `deadline` passed; true when it returned.
    public func join(until deadline: BootInstant) -> Bool {
        let left = max(0, (deadline - Clock.boot()).nanoseconds)
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let end = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec) + left
        var limit = timespec(tv_sec: Int(end / 1_000_000_000), tv_nsec: Int(end % 1_000_000_000))
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        while !finished {
            if pthread_cond_timedwait(ended, lock, &limit) == ETIMEDOUT { break }
        }
        return finished
    }

    private func markFinished() {
        pthread_mutex_lock(lock)
        finished = true
        pthread_cond_broadcast(ended)
        pthread_mutex_unlock(lock)
    }

    private final class Job {
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
