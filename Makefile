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
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fopenmp -pthread -Isrc $(SANFLAGS)
LDFLAGS += -fopenmp -pthread $(SANFLAGS)
LDLIBS  += -lopenblas -lpng -lcjson -lpcre2-8 -lutf8proc -lm

LIB_SRC := $(wildcard src/common/*.c) $(wildcard src/backend/*.c) $(wildcard src/model/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB     := $(BUILD)/libsdc.a

TOOLS   := $(patsubst tools/%.c,$(BUILD)/bin/%,$(wildcard tools/*.c))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNITS   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
BENCH_SRC := $(wildcard bench/*.c)
BENCHES := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all deps test unit asan bench demo clean
all: $(LIB) $(TOOLS) $(UNITS) $(BENCHES)

$(BUILD)/obj/%.o: %.c
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
