// Package zodbtools holds the reusable parts of the zodb command (and of
// other tools that speak zodbtools' formats), compatible byte for byte with
// Nexedi's zodbtools:
//
//   - the dump format: Dump writes it from any storage's iteration (raw, or
//     with pickles disassembled as "zpickledis"); DumpReader reads it back
//     (verifying the data hashes: sha1, sha256, sha512, crc32, adler32,
//     null), and DumpTxn.AppendDump writes one transaction;
//   - Quote and Unquote, the string quoting of the dump format (pygolang's
//     strconv.quote rules);
//   - ParseTid and ParseTidRange for "tidmin..tidmax" arguments, with hex
//     tids and dates ("2018-01-01T10:30:00Z", "yesterday", "3.days.ago");
//   - RestoreTxn/Restore (re-create dumped transactions with their tids)
//     and Commit (commit a new transaction given in dump form);
//   - DisassembleRecord/DisassembleExtension: pickletools.dis output;
//   - StorageName/StorageSize with the optional driver interfaces Namer and
//     Sizer, for "zodb info".
package zodbtools
