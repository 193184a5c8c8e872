"""Domain labels for servers: from the catalog, from the judge, or from a keyword rule.

The keyword rule is the deterministic last resort: it scores each of the 26 categories by
keyword hits in the server's name, description and tool names, and takes the best.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

KEYWORDS: dict[str, tuple[str, ...]] = {
    "Web Search & Research": (
        "search",
        "research",
        "google",
        "bing",
        "arxiv",
        "scholar",
        "wiki",
        "crawl",
        "scrape",
    ),
    "Browser Automation": (
        "browser",
        "playwright",
        "puppeteer",
        "selenium",
        "navigate",
        "click",
        "screenshot",
    ),
    "Memory Management": (
        "memory",
        "remember",
        "knowledge graph",
        "entities",
        "observations",
        "context store",
        "recall",
    ),
    "Operating System": (
        "shell",
        "command",
        "process",
        "terminal",
        "system",
        "os ",
        "bash",
        "exec",
    ),
    "Data Analysis & Processing": (
        "analy",
        "statistic",
        "math",
        "calculat",
        "chart",
        "pandas",
        "dataframe",
        "spreadsheet",
        "excel",
        "csv",
        "median",
        "arithmetic",
    ),
    "Cryptocurrency & Blockchain": (
        "crypto",
        "bitcoin",
        "ethereum",
        "blockchain",
        "token price",
        "wallet",
        "defi",
        "nft",
        "solana",
    ),
    "Daily Productivity": (
        "todo",
        "task manager",
        "planning",
        "note",
        "productivity",
        "reminder",
        "word document",
        "docx",
        "powerpoint",
        "slides",
        "presentation",
    ),
    "File Management": (
        "file",
        "directory",
        "folder",
        "path",
        "filesystem",
        "pdf",
        "document conversion",
        "markdown",
    ),
    "Database Operations": (
        "sql",
        "database",
        "query",
        "table",
        "sqlite",
        "postgres",
        "mysql",
        "duckdb",
        "cypher",
        "schema",
    ),
    "API Integration": ("api", "openapi", "webhook", "rest", "graphql", "endpoint"),
    "Communication Tools": ("email", "slack", "chat", "message", "sms", "discord", "telegram"),
    "Development Tools": (
        "git",
        "code",
        "commit",
        "repository",
        "lint",
        "debug",
        "github",
        "branch",
        "compile",
    ),
    "Security & Authentication": (
        "security",
        "auth",
        "password",
        "vulnerab",
        "encrypt",
        "scan",
        "cve",
    ),
    "Cloud Services": ("aws", "azure", "gcp", "cloud", "kubernetes", "docker", "s3"),
    "AI/ML Tools": (
        "model",
        "llm",
        "embedding",
        "machine learning",
        "inference",
        "image generation",
        "thinking",
        "reasoning",
    ),
    "Content Creation": ("write", "content", "blog", "image", "video", "design", "draw", "diagram"),
    "Social Media": (
        "twitter",
        "reddit",
        "instagram",
        "facebook",
        "tiktok",
        "linkedin",
        "youtube",
        "social",
    ),
    "Financial Services": (
        "finance",
        "stock",
        "bank",
        "payment",
        "invoice",
        "accounting",
        "loan",
        "tax",
        "currency",
    ),
    "E-commerce": ("shop", "product", "order", "cart", "store", "ecommerce", "amazon", "price"),
    "Gaming": ("game", "chess", "pokemon", "player", "steam", "puzzle"),
    "Education": ("learn", "course", "quiz", "education", "dictionary", "student", "teach"),
    "Health & Fitness": (
        "health",
        "medical",
        "fitness",
        "drug",
        "clinical",
        "patient",
        "workout",
        "nutrition",
    ),
    "Travel & Maps": ("travel", "map", "flight", "hotel", "route", "location", "geocod", "airbnb"),
    "News & Media": ("news", "headline", "article", "rss", "media", "trend"),
    "Weather": ("weather", "forecast", "temperature", "climate", "rain"),
    "Time & Calendar": ("time", "timezone", "calendar", "date", "schedule", "clock", "holiday"),
}

WORD = re.compile(r"[a-z0-9]+")


def normalize_category(label: str | None, categories: Iterable[str]) -> str | None:
    """The category `label` names (case and spacing tolerant), or None if it names none."""
    if not label:
        return None
    wanted = " ".join(WORD.findall(label.lower()))
    for category in categories:
        if " ".join(WORD.findall(category.lower())) == wanted:
            return category
    return None


def label_by_keywords(texts: Iterable[str], categories: Iterable[str]) -> str | None:
    """Best-scoring category by keyword hits; ties go to the earlier category; None if no hit."""
    haystack = " " + " ".join(t.lower() for t in texts if t) + " "
    haystack = haystack.replace("_", " ").replace("-", " ")
    best, best_hits = None, 0
    for category in categories:
        hits = sum(haystack.count(k) for k in KEYWORDS.get(category, ()))
        if hits > best_hits:
            best, best_hits = category, hits
    return best
