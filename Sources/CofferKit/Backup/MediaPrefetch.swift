import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The backup's candidates in order, each file to read already opened, with the first bytes
/// of the next `depth` files asked of the disk ahead of their turn (`POSIX_FADV_WILLNEED`).
///
/// Reading one file at a time, a backup of many small files on a cold page cache waits for
/// each file's first block before asking for the next: one request in flight. The files ahead
/// are opened while the current one is read, and the kernel starts reading their first bytes
/// at once, so the disk serves many requests together. Each file is opened once either way
/// (its descriptor is handed to the store), so a warm cache pays one `posix_fadvise` a file.
final class MediaPrefetch {
    typealias Candidate = BackupRunner.Candidate

    /// A candidate and, for one to read, its descriptor or the errno of its opening.
    struct Opened {
        var candidate: Candidate
        /// `>= 0` a descriptor the caller now owns, `< 0` minus the errno; 0 when `reuse` is set.
        var descriptor: Int32
    }

    /// How many files ahead are opened, and how much of each is asked for ahead.
    static let depth = 64
    static let headBytes: Int64 = 512 << 10

    private let folders: DirectoryCursor
    private let source: () throws -> Candidate?
    private var ahead: [Opened] = []
    private var head = 0
    private var exhausted = false

    /// `root` is the media root, `source` the candidates in path order (nil at the end).
    init(root: PathBytes, source: @escaping () throws -> Candidate?) {
        folders = DirectoryCursor(root: root)
        self.source = source
        ahead.reserveCapacity(Self.depth * 2)
    }

    deinit {
        for opened in ahead[head...] where opened.candidate.reuse == nil && opened.descriptor >= 0 { close(opened.descriptor) }
    }

    /// The root as shown in messages.
    var root: PathBytes { folders.root }

    /// The next candidate; a file to read comes with its descriptor, which the caller closes.
    func next() throws -> Opened? {
        try fill()
        guard head < ahead.count else { return nil }
        let opened = ahead[head]
        head += 1
        if head >= Self.depth { ahead.removeFirst(head); head = 0 }
        return opened
    }

    private func fill() throws {
        while !exhausted, ahead.count - head < Self.depth {
            guard let candidate = try source() else { exhausted = true; return }
            guard candidate.reuse == nil else {
                ahead.append(Opened(candidate: candidate, descriptor: 0))
                continue
            }
            // O_NONBLOCK: a file swapped for a FIFO since the walk must not hang the backup.
            let fd = folders.openFile(candidate.relative, flags: O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
            if fd < 0 {
                ahead.append(Opened(candidate: candidate, descriptor: -errno))
                continue
            }
            let length = min(candidate.info.size, Self.headBytes)
            if length > 0 { _ = posix_fadvise(fd, 0, off_t(length), Int32(POSIX_FADV_WILLNEED)) }
            ahead.append(Opened(candidate: candidate, descriptor: fd))
        }
    }
}
