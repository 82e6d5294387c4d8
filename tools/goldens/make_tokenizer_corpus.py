"""Makes the tokenizer corpus and its reference ids.

    python tools/goldens/make_tokenizer_corpus.py [--tokenizer DIR] [--out-dir DIR]

Writes (default: tests/data/):
    tokenizer_corpus.jsonl        one JSON string per line (>= 2000 texts)
    tokenizer_corpus_ids.jsonl    the ids of each, one JSON array per line
    tokenizer_invalid_utf8.jsonl  {"hex": raw bytes, "ids": [...]} per line:
                                  byte strings that are not valid UTF-8, with
                                  the ids of bytes.decode("utf-8", "replace")
    tiny-bpe-tokenizer/tokenizer.json
                                  a 280-token byte-level BPE whose added tokens
                                  use every flag (lstrip, rstrip, single_word,
                                  normalized, special)
    tokenizer_flags.jsonl         {"text", "ids", "ids_split_special"} per
                                  line: its ids, and with special tokens
                                  encoded as text (encode_special_tokens)

Reference: HF `tokenizers` (Tokenizer.encode(text, add_special_tokens=False))
on tests/data/qwen2.5-tokenizer, with the tokenizer.json that
make_qwen_tokenizer.py assembles. The texts are generated from fixed lists
and a seeded random.Random, so two runs write identical files.
"""

import argparse
import json
import os
import random
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import make_qwen_tokenizer  # noqa: E402

SEED = 20250611

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "A cat holding a sign that says \"hello world\"",
    "A photorealistic portrait of an astronaut riding a horse on Mars, 8k, highly detailed",
    "An oil painting of a lighthouse at dusk, waves crashing against the rocks.",
    "Isn't it strange? I'd say we'll never know, but they've tried and you're right.",
    "IT'S A TRAP! WE'LL SEE. THEY'D KNOW. YOU'RE LATE. I'M HERE. WE'VE WON. DON'T.",
    "It'S mIxEd CaSe: We'Ll, They'Ve, I'M, You'Re, He'D.",
    "rock 'n' roll, 'quoted', ''double'', 'tis the season, o'clock",
    "Hello,world!How are you?Fine...thanks!!!",
    "e-mail me at someone@example.com or call +1 (555) 010-9999 ext. 42",
    "Minimalist logo, flat vector, two colors: #FF5733 and #1E90FF.",
    "A watercolor of a fox in the snow -- soft light, muted palette; no text.",
    "Mr. O'Neil's dog's bone wasn't there; it's the neighbours' dogs' fault.",
    "The year 2024 had 366 days; 3.14159 is pi; 1,000,000 is a million; 1e-9 is tiny.",
    "Tabs\tand\tnewlines\nmixed\r\nwith CRLF\rand CR.",
    "    leading spaces and trailing spaces    ",
    "UPPERCASE WORDS AND lowercase words And Title Case Words",
    "snake_case_identifier camelCaseIdentifier PascalCase kebab-case SCREAMING_CASE",
    "A cozy reading nook with a window seat, rain outside, warm lamp light, 35mm film.",
    "Cinematic shot of a futuristic city skyline at night with neon signs reading \"OPEN 24/7\".",
]

CHINESE = [
    "一个身穿唐朝服饰的女子,站在盛开的樱花树下",
    "用青花瓷风格写出“春”字",
    "一只橘猫坐在窗台上，窗外下着小雨，温暖的灯光，胶片质感。",
    "水墨画风格的山水，远处有一座小桥和几间茅屋。",
    "赛博朋克风格的城市夜景，霓虹灯招牌上写着“欢迎光临”。",
    "一碗热腾腾的兰州拉面，牛肉片和香菜，俯拍，美食摄影。",
    "故宫的雪景，红墙黄瓦，游客稀少，清晨的阳光。",
    "一位老人在公园里打太极拳，背景是秋天的银杏树。",
    "海报设计：标题为“中秋快乐”，月亮、玉兔和桂花。",
    "我今天很高兴，因为天气很好！你呢？",
    "人工智能正在改变我们的生活方式。",
    "请把这段文字翻译成英文：春眠不觉晓，处处闻啼鸟。",
    "中华人民共和国成立于1949年10月1日。",
    "书法作品，行书写“厚德载物”四个大字，宣纸，印章。",
    "一个穿着汉服的小女孩在放风筝，蓝天白云。",
    "【限时优惠】全场商品八折起！！！",
    "《红楼梦》是中国古典四大名著之一。",
    "价格：￥1999.00（含税）",
    "他说：“我们明天见。”然后就走了……",
    "繁體中文：臺灣的夜市很熱鬧，有很多好吃的小吃。",
]

JAPANESE_KOREAN = [
    "東京タワーの夜景、雨に濡れた街並み、シネマティック。",
    "こんにちは、世界！今日はいい天気ですね。",
    "カタカナとひらがなと漢字が混ざった文章です。ｶﾀｶﾅ半角も。",
    "桜の木の下で着物を着た女性、浮世絵風。",
    "안녕하세요, 세계! 오늘 날씨가 좋네요.",
    "서울의 밤거리, 네온사인, 비 오는 날, 영화 같은 장면.",
    "한국어와 English가 섞인 문장입니다. 123개!",
    "日本語の句読点。「括弧」『二重括弧』・中黒…",
]

OTHER_SCRIPTS = [
    "مرحبا بالعالم! كيف حالك اليوم؟",
    "القطة تجلس على النافذة، والمطر يتساقط في الخارج.",
    "नमस्ते दुनिया! आज मौसम बहुत अच्छा है।",
    "क़लम, ज़रूर, फ़िल्म — nukta letters in Hindi.",
    "สวัสดีชาวโลก วันนี้อากาศดีมาก",
    "ภาพวาดสีน้ำของวัดในกรุงเทพ",
    "שלום עולם! מה שלומך?",
    "Привет, мир! Как дела? Ёжик в тумане.",
    "Γειά σου Κόσμε! Καλημέρα.",
    "வணக்கம் உலகம்! கொ கோ கௌ",
    "হ্যালো বিশ্ব! আজকের আবহাওয়া ভালো।",
    "Xin chào thế giới! Tiếng Việt có nhiều dấu: ệ, ở, ữ, ặ.",
    "Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "ქართული ენა, Հայերեն լեզու, አማርኛ ቋንቋ",
    "Ελληνικά, Русский, Українська, Беларуская, Български",
]

EMOJI = [
    "I love pizza 🍕 and sushi 🍣!",
    "Family: 👨‍👩‍👧‍👦 couple: 👩‍❤️‍💋‍👨 rainbow flag: 🏳️‍🌈",
    "Skin tones: 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿",
    "Flags: 🇨🇳 🇺🇸 🇯🇵 🇰🇷 🇫🇷 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "Keycaps: 1️⃣ 2️⃣ #️⃣ *️⃣",
    "🎨🖼️✨🌸🌊🔥💯🚀",
    "Text with emoji in the middle😀of words😀😀",
    "❤️ vs ❤ vs ♥︎",
    "一只可爱的柴犬🐕在草地上奔跑🌿",
    "🧑‍🚀 astronaut, 🧑🏽‍🍳 cook, 👩🏿‍💻 technologist",
]

CODE = [
    "def f(x):\n    return x ** 2 + 1\n\nprint(f(3))\n",
    "#include <stdio.h>\nint main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (int i = 0; i < n; ++i) { a[i] += b[i] * c; }",
    "{\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "<div class=\"container\"><p>Hello &amp; welcome</p></div>",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name ORDER BY 2 DESC;",
    "x = [i*i for i in range(10) if i % 2 == 0]  # squares",
    "fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u8> = vec![0; 16]; Ok(()) }",
    "const re = /^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)$/i;",
    "if [ -f \"$HOME/.bashrc\" ]; then source ~/.bashrc; fi && echo $?",
    "    indented with four spaces\n\tindented with a tab\n        eight spaces",
    "a==b!=c<=d>=e&&f||g<<h>>i->j::k...l",
    "// comment\n/* block\n   comment */\n# hash comment\n-- sql comment",
    "matrix = [[1, 2], [3, 4]]\nresult = np.dot(matrix, matrix.T)\n",
]

URLS = [
    "https://www.example.com/path/to/page?query=1&lang=zh-CN#section",
    "http://localhost:8080/api/v1/users/12345",
    "ftp://files.example.org/pub/file-1.2.3.tar.gz",
    "Visit https://github.com/huggingface/tokenizers for more.",
    "见 https://zh.wikipedia.org/wiki/%E4%B8%AD%E6%96%87 了解详情",
    "mailto:user.name+tag@sub.example.co.uk",
    "C:\\Users\\Name\\Documents\\file.txt and /usr/local/bin/sdc",
]

SPECIAL_TEXTS = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|><|vision_end|>What is this?<|im_end|>",
    "text<|endoftext|>more text",
    " <|endoftext|> ",
    "<|endoftext|><|endoftext|><|endoftext|>",
    "<|im_start|",
    "<|im_start|><|im_end|>",
    "<<|im_end|>|>",
    "<|im_start|>assistant\n<tool_call>\n{\"name\": \"f\"}\n</tool_call><|im_end|>",
    "<|fim_prefix|>def f():<|fim_suffix|>\n    return 1<|fim_middle|>",
    "<|repo_name|>sdc<|file_sep|>src/main.c",
    "<|object_ref_start|>the cat<|object_ref_end|><|box_start|>(10,20),(30,40)<|box_end|>",
    "<|quad_start|><|quad_end|><|vision_pad|><|video_pad|>",
    "Pre<|IM_START|>not special because of case<|Im_End|>",
    "<|im_start|>\u0301 combining mark after a special token",
    "e<|im_end|>\u0301 split normalisation",
    "<think>not a Qwen2.5 token</think>",
    "<|im_start|>user\n用青花瓷风格写出“春”字<|im_end|>\n<|im_start|>assistant\n",
    "<|extra_0|> is a Qwen1 token, plain text for Qwen2.5",
    "  <|im_end|>  \n  <|im_start|>  ",
]

COMBINING = [
    "e\u0301 a\u0300 o\u0308 n\u0303 c\u0327",          # decomposed Latin -> composed
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",  # Hangul jamo -> syllables
    "q\u0307\u0323 q\u0323\u0307",                      # canonical reordering
    "\u212b \u2126 \u212a",                            # singletons: Angstrom, Ohm, Kelvin
    "\uf900\uf901\uf902 \ufa10",                        # CJK compatibility ideographs
    "\u0958\u0959\u095a",                              # Devanagari composition exclusions
    "\u0915\u093c \u0916\u093c",                        # nukta sequences
    "\u1e9b\u0323",                                    # long s with dots
    "A\u030a\u0301 \u00c5\u0301",
    "\u0b95\u0bcd\u0bb7 \u0b92\u0bd7 \u0b95\u0bc6\u0bbe",  # Tamil, second elements
    "\u304b\u3099\u304d\u3099 \u30cf\u309a",            # kana + voiced marks
    "x\u0301y\u0302z\u0303\u0304\u0305",
    "\u0041\u0301\u0042\u0301\u0043\u0301",
    "\u00e9\u0301\u0301",
    "\u0301leading combining mark",
    "\u05d1\u05bc\u05b8 \u05e9\u05c1",                  # Hebrew points
    "\u0627\u0653 \u0627\u0654 \u0648\u0654",            # Arabic maddah/hamza
    "\ufb1d\ufb2a\ufb4e",                              # Hebrew presentation forms
]

ODD = [
    "a\u180e\u180eb", "x \u180ey", "word \u180e\u180e word", "\u180e\u180ex", "a\u0085\u0085b", "a\u00a0\u00a0b", "a\u1680b", "a\u2000\u2001\u200ab",
    "a\u200b\u200bb", "a\u2028b\u2029c", "a\u202fb\u205fc", "a\u3000\u3000b", "a\ufeffb",
    "\x1c\x1d\x1e\x1f", "a\x0b\x0cb", "\x00", "a\x00b", "\x00\x00\x00 NUL \x00",
    "\x7f\x01\x02\x03", "it'\u017f", "IT'\u017fT", "'\ufb06", "\u01c5x", "K'\u212a",
    "\ufffd replacement char \ufffd\ufffd", "\U0001d400\U0001d401 math bold",
    "\U00020000\U0002a6d6 CJK ext B", "\ue000 private use \U000f0000",
    "\u00b2\u00b3\u00b9 \u2460\u2461 \u216b \u0661\u0662\u0663 \u0967\u0968",
    "\u0300", "\u200d", "\ufe0f", "\u00ad soft\u00adhyphen",
    "'s", "'S", "'", "''", "'''s", " 's", "\n's", "x's'", "'ll'", "'LL", "'Ll", "'lL",
    "'re'", "'ve", "'M", "'d", "'D", "'T", "'t", "'st", "'sa", "'dd",
]

WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have "
    "from or one had by word but not what all were we when your can said there use an each "
    "which she do how their if will up other about out many then them these so some her "
    "would make like him into time has look two more write go see number no way could people "
    "my than first water been call who oil its now find long down day did get come made may "
    "part photo portrait landscape cinematic lighting detailed watercolor sketch neon vintage "
    "don't can't won't it's I'm you're we'll they've she'd HE'S WE'RE I'LL"
).split()

HANZI = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能"
         "下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加"
         "量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与"
         "关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者"
         "最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少"
         "图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光"
         "门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清美再采转"
         "更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话"
         "米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商"
         "非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值"
         "号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调"
         "满县局照参红细引听该铁价严龙飞")
PUNCT_ZH = "，。！？；：、“”（）《》【】……——"
PUNCT_EN = ".,!?;:'\"()[]{}-_/\\@#$%^&*+=<>|~`"


def gen_english(rng):
    n = rng.randint(1, 30)
    words = [rng.choice(WORDS) for _ in range(n)]
    if rng.random() < 0.3:
        words = [w.capitalize() if rng.random() < 0.5 else w.upper() for w in words]
    s = " ".join(words)
    if rng.random() < 0.5:
        s += rng.choice(".!?,;:")
    return s


def gen_chinese(rng):
    out = []
    for _ in range(rng.randint(1, 6)):
        out.append("".join(rng.choice(HANZI) for _ in range(rng.randint(1, 12))))
        out.append(rng.choice(PUNCT_ZH))
    return "".join(out)


def gen_mixed(rng):
    parts = []
    for _ in range(rng.randint(2, 8)):
        k = rng.random()
        if k < 0.3:
            parts.append(gen_english(rng))
        elif k < 0.6:
            parts.append(gen_chinese(rng))
        elif k < 0.7:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 20))))
        elif k < 0.8:
            parts.append(rng.choice(EMOJI))
        elif k < 0.9:
            parts.append(rng.choice(JAPANESE_KOREAN + OTHER_SCRIPTS))
        else:
            parts.append(rng.choice(PUNCT_EN) * rng.randint(1, 4))
    seps = ["", " ", "  ", "\n", "\t", ", ", "，"]
    return "".join(p + rng.choice(seps) for p in parts)


def gen_numbers(rng):
    k = rng.randint(0, 5)
    if k == 0:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 80)))
    if k == 1:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}"
    if k == 2:
        return f"{rng.randint(1, 9999)}年{rng.randint(1, 12)}月{rng.randint(1, 28)}日"
    if k == 3:
        return " ".join(str(rng.randint(0, 10 ** 6)) for _ in range(rng.randint(2, 10)))
    if k == 4:
        return f"{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}:{rng.randint(1, 65535)}"
    return f"v{rng.randint(0, 9)}.{rng.randint(0, 99)}.{rng.randint(0, 999)}-rc{rng.randint(1, 9)}"


def gen_whitespace(rng):
    atoms = [" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", " \n", "\t\n", "\u3000", "\u00a0"]
    out = []
    for _ in range(rng.randint(1, 12)):
        if rng.random() < 0.5:
            out.append(rng.choice(atoms) * rng.randint(1, 5))
        else:
            out.append(rng.choice(["word", "中文", "x", "1", ".", "'s", "!!", "A"]))
    return "".join(out)


def gen_ascii_fuzz(rng):
    alphabet = "ab AB 01 .,'\"!?-_\t\n\r\\/#@sStTlLdDmMvVeE"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))


def gen_unicode_fuzz(rng):
    out = []
    while len(out) < rng.randint(1, 40):
        block = rng.choice([(0x20, 0x7f), (0xa0, 0x250), (0x300, 0x370), (0x370, 0x530),
                            (0x590, 0x700), (0x900, 0xe80), (0x1100, 0x1200), (0x1e00, 0x2000),
                            (0x2000, 0x2070), (0x3000, 0x3100), (0x4e00, 0x9fff), (0xac00, 0xd7a4),
                            (0xff00, 0xfff0), (0x1f300, 0x1fa00), (0x0, 0x20)])
        c = chr(rng.randrange(*block))
        if unicodedata.category(c) in ("Cn", "Cs", "Co"):
            continue
        out.append(c)
    return "".join(out)


def gen_special_mix(rng):
    specials = [c for _, c, _ in make_qwen_tokenizer.QWEN25_ADDED]
    out = []
    for _ in range(rng.randint(1, 8)):
        k = rng.random()
        if k < 0.4:
            out.append(rng.choice(specials))
        elif k < 0.7:
            out.append(gen_english(rng))
        elif k < 0.9:
            out.append(gen_chinese(rng))
        else:
            out.append(rng.choice([" ", "\n", "  ", "<|", "|>", "<", "\u0301"]))
    return "".join(out)


def gen_prompt(rng):
    subjects = ["一只白色的猫", "一位穿着旗袍的女士", "a red panda", "an old fisherman", "一座古老的寺庙",
                "a robot barista", "两个孩子", "a dragon made of clouds", "一辆复古的自行车"]
    places = ["在雪山之巅", "在热闹的夜市里", "in a misty bamboo forest", "on a rainy Tokyo street",
              "在江南水乡的石桥上", "inside a glass greenhouse", "在沙漠中的绿洲旁"]
    styles = ["，水彩画风格", ", oil painting", "，赛博朋克风格", ", studio ghibli style",
              "，超写实摄影，8K", ", ukiyo-e woodblock print", "，国风插画", ", isometric 3D render"]
    extras = ["", "，画面中有文字“福”", ", with the text \"OPEN\" on a sign", "，柔和的晨光",
              ", dramatic lighting", "，背景虚化", ", --ar 16:9"]
    return rng.choice(subjects) + rng.choice(places) + rng.choice(styles) + rng.choice(extras)


def gen_long(rng, n_chars):
    parts = []
    total = 0
    while total < n_chars:
        p = rng.choice([gen_english, gen_chinese, gen_mixed, gen_prompt, gen_numbers])(rng)
        parts.append(p)
        total += len(p)
    return "\n".join(parts)


def corpus():
    rng = random.Random(SEED)
    texts = ["", " ", "a", "\n"]
    for fixed in (ENGLISH, CHINESE, JAPANESE_KOREAN, OTHER_SCRIPTS, EMOJI, CODE, URLS,
                  SPECIAL_TEXTS, COMBINING, ODD):
        texts.extend(fixed)
    gens = [(gen_english, 250), (gen_chinese, 250), (gen_mixed, 300), (gen_numbers, 150),
            (gen_whitespace, 150), (gen_ascii_fuzz, 200), (gen_unicode_fuzz, 250),
            (gen_special_mix, 150), (gen_prompt, 150)]
    for gen, n in gens:
        texts.extend(gen(rng) for _ in range(n))
    # Variants of the fixed texts: case, surrounding spaces, NFD forms.
    for s in ENGLISH + CHINESE + OTHER_SCRIPTS + COMBINING:
        texts.append(s.upper())
        texts.append("  " + s + " \n")
        texts.append(unicodedata.normalize("NFD", s))
    # Long texts: runs that stress one regex branch, and mixed documents.
    texts.append(" " * 5000)
    texts.append("\n" * 3000 + "x")
    texts.append("a" * 20000)
    texts.append("中" * 10000)
    texts.append("9" * 5000)
    texts.append("!?" * 4000)
    texts.append((" \t\n" * 1500) + "end")
    texts.extend(gen_long(rng, n) for n in (20000, 50000, 100000))
    return texts


def invalid_utf8_cases():
    rng = random.Random(SEED + 1)
    fixed = [b"\xff", b"\xc0\x80", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
             b"\xf0\x9f\x98", b"\xe4\xb8", b"\x80\x80", b"a\xffb", b"\xfe\xfe",
             b"\xf8\x88\x80\x80\x80", b"\xc2", b"\xe2\x82\xac\xe2\x82",
             "中文".encode() + b"\xe4" + "文字".encode(),
             b"<|im_start|>\xffuser<|im_end|>", b"<|im_\xffstart|>",
             b"hello \xc3\x28 world", b"\xf0\x28\x8c\xbc", b"\xf0\x90\x28\xbc",
             b"\xe1\x80\xe2\xf0\x91\x92\xf1\xbf\x41", b"e\xcc", b"\xef\xbb\xbfBOM",
             b"\x00\xff\x00", b"'\xffs", b"   \xa0\xa0   "]
    cases = list(fixed)
    for _ in range(75):
        base = bytearray(rng.choice(ENGLISH + CHINESE + EMOJI).encode())
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(base) + 1)
            base[pos:pos] = bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randint(1, 3)))
        cases.append(bytes(base))
    return cases


# Added tokens of the tiny tokenizer: (content, special, lstrip, rstrip,
# single_word, normalized).
FLAG_TOKENS = [
    ("<mask>", True, True, False, False, False),
    ("[END]", True, False, True, False, False),
    ("word", False, False, False, True, False),
    ("\u212b", False, False, False, False, True),   # Angstrom sign, NFC -> U+00C5
    ("<|sp|>", True, False, False, False, False),
    ("<|sp|>x", False, False, False, False, False),  # longer, same start
    ("ab", False, False, False, False, True),
    ("  ", False, False, True, False, False),        # whitespace token with rstrip
]

FLAG_TEXTS = [
    "hello <mask> world", "hello   <mask>", "<mask>", "   <mask>   ", "a\u3000\u00a0<mask>b",
    "[END]   next", "[END]\n\n\tx", "x[END]", "[END][END]  [END]",
    "word", "a word here", "sword", "words", "word.", "_word", "wordword", "word word",
    "1word", "\u00e9word", "word\u0301", "<|sp|>word<|sp|>",
    "\u212b", "\u00c5", "A\u030a", "x\u212by", "<|sp|>", "<|sp|>x", "<|sp|>xx", "<|sp|<|sp|>x",
    "ab", "abab", "a\u0062", "cab", "  ", "    ", "a  b", "a   <mask>", "  <mask>", "<mask>  [END]  ",
    "the word and the <mask> in the end[END]", "", "plain text without tokens",
]


def tiny_tokenizer_json():
    b2u = make_qwen_tokenizer.bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u))}
    merges = [("\u0120", "t"), ("h", "e"), ("\u0120t", "he"), ("i", "n"), ("\u0120", "w"),
              ("o", "r"), ("\u0120w", "or"), ("\u0120wor", "d"), ("a", "n"), ("an", "d"),
              ("\u0120", "a"), ("\u0120a", "n"), ("\u0120an", "d"), ("e", "n"), ("\u0120", "\u0120"),
              ("w", "or"), ("wor", "d"), ("x", "x"), ("l", "l"), ("e", "ll"), ("h", "ell"),
              ("hell", "o")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    added = []
    for i, (content, special, lstrip, rstrip, single_word, normalized) in enumerate(FLAG_TOKENS):
        added.append({"id": 300 + i, "content": content, "single_word": single_word,
                      "lstrip": lstrip, "rstrip": rstrip, "normalized": normalized,
                      "special": special})
    tj = make_qwen_tokenizer.tokenizer_json(os.path.join(ROOT, "tests", "data", "qwen2.5-tokenizer"))
    tj["added_tokens"] = added
    tj["model"]["vocab"] = vocab
    tj["model"]["merges"] = [list(m) for m in merges]
    return tj


def write_flags(out_dir):
    from tokenizers import Tokenizer
    d = os.path.join(out_dir, "tiny-bpe-tokenizer")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tiny_tokenizer_json(), f, ensure_ascii=False, indent=1)
        f.write("\n")
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_flags.jsonl"), "w", encoding="utf-8") as f:
        for text in FLAG_TEXTS:
            tok.encode_special_tokens = False
            ids = tok.encode(text, add_special_tokens=False).ids
            tok.encode_special_tokens = True
            ids_split = tok.encode(text, add_special_tokens=False).ids
            f.write(json.dumps({"text": text, "ids": ids, "ids_split_special": ids_split},
                               ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "tests", "data", "qwen2.5-tokenizer"))
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "tests", "data"))
    args = ap.parse_args()

    tok = make_qwen_tokenizer.hf_tokenizer(args.tokenizer)
    texts = corpus()
    with open(os.path.join(args.out_dir, "tokenizer_corpus.jsonl"), "w", encoding="utf-8") as fc, \
            open(os.path.join(args.out_dir, "tokenizer_corpus_ids.jsonl"), "w") as fi:
        for t in texts:
            fc.write(json.dumps(t, ensure_ascii=False) + "\n")
            fi.write(json.dumps(tok.encode(t, add_special_tokens=False).ids) + "\n")
    with open(os.path.join(args.out_dir, "tokenizer_invalid_utf8.jsonl"), "w") as f:
        for b in invalid_utf8_cases():
            ids = tok.encode(b.decode("utf-8", errors="replace"), add_special_tokens=False).ids
            f.write(json.dumps({"hex": b.hex(), "ids": ids}) + "\n")
    write_flags(args.out_dir)
    print(f"{len(texts)} texts, {sum(len(t) for t in texts)} characters")


if __name__ == "__main__":
    main()
