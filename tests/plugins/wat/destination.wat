;; A hand-written bizon destination component (bizon:destination@0.1.0),
;; the shape a Rust plugin cannot take: the end-to-end tests fill in the
;; two holes below (more core modules, instances or imports; the body of
;; describe) to build hostile variants, or change the version of the
;; contract it exports (tests/e2e/support/guests.rs). Left as is, it is a
;; plugin that accepts every batch.
(component
  (core module $m
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      ;; Bump allocator, aligned to 8: plenty for one call's arguments.
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536)))
        (then (drop (memory.grow (i32.add (i32.div_u (local.get 3) (i32.const 65536)) (i32.const 1))))))
      (local.get $p))
    (data (i32.const 16) "wat-hostile")
    (data (i32.const 32) "0.1.0")
    ;; plugin-info: name (ptr 16, len 11), version (ptr 32, len 5), input-format 0.
    (data (i32.const 64) "\10\00\00\00\0b\00\00\00\20\00\00\00\05\00\00\00\00")
    (func (export "describe") (result i32)
      @DESCRIBE@
      (i32.const 64))
    ;; result<_, string>: ok.
    (data (i32.const 128) "\00")
    (func (export "open") (param i32 i32) (result i32) (global.set $bump (i32.const 4096)) (i32.const 128))
    (func (export "check") (result i32) (i32.const 128))
    (func (export "finalize") (result i32) (i32.const 128))
    ;; result<u64, write-error>: ok(num-rows), the payload at offset 8.
    (func (export "write") (param i32 i32 i64 i64 i32 i32) (result i32)
      (global.set $bump (i32.const 4096))
      (i32.store8 (i32.const 192) (i32.const 0))
      (i64.store (i32.const 200) (local.get 3))
      (i32.const 192))
  )
  (core instance $i (instantiate $m))
  @EXTRA@
  (type $input-format (enum "arrow-ipc" "ndjson"))
  (type $plugin-info (record (field "name" string) (field "version" string) (field "input-format" $input-format)))
  (type $batch-info (record (field "destination-id" string) (field "sequence" u64) (field "num-rows" u64)))
  (type $rejected-row (record (field "row" u64) (field "reason" string)))
  (type $write-error (variant (case "retryable" string) (case "fatal" string) (case "rejected" (list $rejected-row))))
  (func $describe (result $plugin-info)
    (canon lift (core func $i "describe") (memory (core memory $i "memory")) (realloc (core func $i "realloc")) string-encoding=utf8))
  (func $open (param "config" string) (result (result (error string)))
    (canon lift (core func $i "open") (memory (core memory $i "memory")) (realloc (core func $i "realloc")) string-encoding=utf8))
  (func $check (result (result (error string)))
    (canon lift (core func $i "check") (memory (core memory $i "memory")) (realloc (core func $i "realloc")) string-encoding=utf8))
  (func $write (param "info" $batch-info) (param "batch" (list u8)) (result (result u64 (error $write-error)))
    (canon lift (core func $i "write") (memory (core memory $i "memory")) (realloc (core func $i "realloc")) string-encoding=utf8))
  (func $finalize (result (result (error string)))
    (canon lift (core func $i "finalize") (memory (core memory $i "memory")) (realloc (core func $i "realloc")) string-encoding=utf8))
  (instance $destination
    (export "input-format" (type $input-format))
    (export "plugin-info" (type $plugin-info))
    (export "batch-info" (type $batch-info))
    (export "rejected-row" (type $rejected-row))
    (export "write-error" (type $write-error))
    (export "describe" (func $describe))
    (export "open" (func $open))
    (export "check-connection" (func $check))
    (export "write-records" (func $write))
    (export "finalize" (func $finalize)))
  (export "bizon:destination/destination@0.1.0" (instance $destination))
)
