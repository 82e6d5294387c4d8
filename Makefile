# sdc: one build for the library, the binaries, the tests and the benchmarks.
#   make            build everything into build/ (binaries in build/bin/)
#   make deps       apt-install missing Debian packages
#   make test       deps + build + every test (prints "N passed, N failed")
#   make asan       the unit tests under ASan + UBSan (same as make test SANITIZE=1)
#   make demo       deps + build + generate images into demo-out/
#   make bench      benchmarks (results under bench/results/)
#   make clean

CC      ?= cc
SANITIZE ?= 0
BUILD   ?= build
ifeq ($(SANITIZE),1)
BUILD   := build-asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT     := -O1
else
SANFLAGS :=
OPT     := -O2
endif

CFLAGS  ?= $(OPT) -g
GEN     := $(BUILD)/gen
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fopenmp -pthread -Isrc -I$(GEN) $(SANFLAGS)
LDFLAGS += -fopenmp -pthread $(SANFLAGS)
LDLIBS  += -lucp -lucs -lhiredis -lprotobuf-c -lopenblas -lpng -lcjson -lpcre2-8 -lutf8proc -lm

LIB_SRC := $(wildcard src/common/*.c) $(wildcard src/backend/*.c) $(wildcard src/model/*.c) \
           $(wildcard src/cluster/*.c)
# protoc-c output is generated into $(GEN), never committed.
PROTOS  := $(wildcard proto/*.proto)
PROTO_C := $(PROTOS:proto/%.proto=$(GEN)/%.pb-c.c)
PROTO_H := $(PROTOS:proto/%.proto=$(GEN)/%.pb-c.h)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(PROTO_C:$(GEN)/%.c=$(BUILD)/obj/gen/%.o)
LIB     := $(BUILD)/libsdc.a

TOOLS   := $(patsubst tools/%.c,$(BUILD)/bin/%,$(wildcard tools/*.c))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNITS   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
BENCH_SRC := $(wildcard bench/*.c)
BENCHES := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all deps test unit asan bench demo clean
all: $(LIB) $(TOOLS) $(UNITS) $(BENCHES)

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --proto_path=proto --c_out=$(GEN) $<

$(BUILD)/obj/gen/%.o: $(GEN)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-unused-parameter -MMD -MP -c $< -o $@

# Every object may include generated headers: generate them first.
$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/%: $(BUILD)/obj/tools/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

deps:
	@tools/deps.sh

test: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) tests/run.sh

unit: all
	@BUILD=$(BUILD) tests/run.sh --unit-only

asan:
	@$(MAKE) --no-print-directory SANITIZE=1 unit

demo: deps
	@$(MAKE) --no-print-directory all
	@SDC_BIN=$(BUILD)/bin tools/demo.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bench/run.sh

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(UNITS:$(BUILD)/tests/%=$(BUILD)/obj/tests/unit/%.d) $(TOOLS:$(BUILD)/bin/%=$(BUILD)/obj/tools/%.d)
