"""The contents of the generated seed data: a small company's databases, repo and handbook."""

from __future__ import annotations

COMPANY_SQL = """
CREATE TABLE departments (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, location TEXT NOT NULL, budget_eur INTEGER NOT NULL
);
INSERT INTO departments VALUES
    (1, 'Engineering', 'Berlin', 1850000), (2, 'Sales', 'Amsterdam', 920000),
    (3, 'Operations', 'Leipzig', 640000), (4, 'Marketing', 'Lisbon', 410000),
    (5, 'Finance', 'Berlin', 300000);
CREATE TABLE employees (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE NOT NULL,
    department_id INTEGER REFERENCES departments(id), title TEXT, salary_eur INTEGER,
    hired_on DATE, manager_id INTEGER REFERENCES employees(id)
);
INSERT INTO employees VALUES
    (1, 'Priya Raman', 'priya@northwind.example', 3, 'Head of Operations', 98000, '2019-03-01', NULL),
    (2, 'Marco Bellini', 'marco@northwind.example', 1, 'Product Lead', 104000, '2020-07-15', NULL),
    (3, 'Ana Sousa', 'ana@northwind.example', 4, 'Content Manager', 61000, '2022-02-01', 2),
    (4, 'Tom Fischer', 'tom@northwind.example', 3, 'Warehouse Manager', 57000, '2021-09-13', 1),
    (5, 'Lea Wagner', 'lea@northwind.example', 1, 'Backend Engineer', 82000, '2023-01-09', 2),
    (6, 'Samir Haddad', 'samir@northwind.example', 1, 'Frontend Engineer', 78000, '2023-05-22', 2),
    (7, 'Julia Kowalski', 'julia@northwind.example', 2, 'Account Executive', 66000, '2021-11-01', 9),
    (8, 'Pieter Jansen', 'pieter@northwind.example', 2, 'Sales Associate', 52000, '2024-04-02', 9),
    (9, 'Claire Dubois', 'claire@northwind.example', 2, 'Head of Sales', 99000, '2018-10-08', NULL),
    (10, 'Henrik Olsen', 'henrik@northwind.example', 5, 'Controller', 88000, '2020-01-20', NULL),
    (11, 'Nora Schmidt', 'nora@northwind.example', 1, 'Data Analyst', 71000, '2024-08-19', 2),
    (12, 'Diego Alvarez', 'diego@northwind.example', 4, 'Social Media Lead', 58000, '2023-03-27', 3);
CREATE TABLE products (
    sku TEXT PRIMARY KEY, name TEXT NOT NULL, category TEXT, price_eur REAL, launched_on DATE
);
INSERT INTO products VALUES
    ('TH40', 'Trailhead 40L backpack', 'backpacks', 149.0, '2026-04-14'),
    ('RG22', 'Ridge 22L daypack', 'backpacks', 89.0, '2024-03-01'),
    ('SB750', 'Summit bottle 750ml', 'accessories', 24.0, '2023-05-10'),
    ('HL300', 'Headlamp 300lm', 'lighting', 39.0, '2022-09-01'),
    ('TP2', 'Tarn 2-person tent', 'tents', 329.0, '2025-02-20');
CREATE TABLE orders (
    id INTEGER PRIMARY KEY, customer TEXT NOT NULL, country TEXT, sku TEXT REFERENCES products(sku),
    quantity INTEGER, ordered_on DATE, status TEXT, sales_rep_id INTEGER REFERENCES employees(id)
);
INSERT INTO orders VALUES
    (1001, 'Alpine Rentals GmbH', 'Austria', 'RG22', 120, '2026-01-08', 'shipped', 7),
    (1002, 'Peak Supply Ltd', 'United Kingdom', 'SB750', 600, '2026-01-12', 'shipped', 7),
    (1003, 'Lena Hoffmann', 'Germany', 'HL300', 2, '2026-01-15', 'delivered', 8),
    (1004, 'Nordic Trail AS', 'Norway', 'TP2', 40, '2026-01-29', 'shipped', 9),
    (1005, 'Peak Supply Ltd', 'United Kingdom', 'RG22', 250, '2026-02-03', 'processing', 7),
    (1006, 'Emma de Vries', 'Netherlands', 'SB750', 3, '2026-02-04', 'delivered', 8),
    (1007, 'Alpine Rentals GmbH', 'Austria', 'TP2', 25, '2026-02-11', 'processing', 9),
    (1008, 'Jonas Berg', 'Sweden', 'HL300', 1, '2026-02-14', 'cancelled', 8),
    (1009, 'Nordic Trail AS', 'Norway', 'TH40', 300, '2026-02-20', 'pre-order', 9),
    (1010, 'Chloe Martin', 'France', 'RG22', 1, '2026-02-21', 'delivered', 8);
CREATE VIEW department_headcount AS
    SELECT d.name AS department, COUNT(e.id) AS headcount, ROUND(AVG(e.salary_eur)) AS avg_salary_eur
    FROM departments d LEFT JOIN employees e ON e.department_id = d.id GROUP BY d.name;
"""

ANALYTICS_SQL = """
CREATE TABLE regions (region VARCHAR PRIMARY KEY, manager VARCHAR, currency VARCHAR);
INSERT INTO regions VALUES ('DACH', 'Claire Dubois', 'EUR'), ('Nordics', 'Julia Kowalski', 'SEK'),
    ('Benelux', 'Pieter Jansen', 'EUR'), ('UK', 'Julia Kowalski', 'GBP'), ('South', 'Claire Dubois', 'EUR');
CREATE TABLE monthly_sales AS
SELECT month, region, sku, units, CAST(units * price AS DECIMAL(12, 2)) AS revenue_eur
FROM (
    SELECT month::DATE AS month, region, sku, price,
           CAST(40 + (EXTRACT(month FROM month) * 37 + length(region) * 11 + ascii(sku) * 7
                      + ascii(region) * 5) % 160 AS INTEGER) AS units
    FROM range(DATE '2025-01-01', DATE '2026-01-01', INTERVAL 1 MONTH) AS months(month)
    CROSS JOIN (VALUES ('DACH'), ('Nordics'), ('Benelux'), ('UK'), ('South')) AS r(region)
    CROSS JOIN (VALUES ('RG22', 89.0), ('SB750', 24.0), ('HL300', 39.0), ('TP2', 329.0)) AS p(sku, price)
)
ORDER BY month, region, sku;
CREATE TABLE web_traffic AS
SELECT day::DATE AS day, channel,
       CAST(200 + (EXTRACT(doy FROM day) * 13 + length(channel) * 71) % 900 AS INTEGER) AS sessions,
       CAST(5 + (EXTRACT(doy FROM day) * 7 + length(channel) * 3) % 40 AS INTEGER) AS orders
FROM range(DATE '2026-01-01', DATE '2026-03-01', INTERVAL 1 DAY) AS days(day)
CROSS JOIN (VALUES ('organic'), ('newsletter'), ('paid_search'), ('social')) AS c(channel)
ORDER BY day, channel;
"""

HANDBOOK_PAGES = [
    [
        "Northwind Outdoor Co. - Employee Handbook (2026 edition)",
        "",
        "1. Working hours",
        "Core hours are 10:00-15:00 CET. Outside core hours you plan your own time.",
        "Remote work is allowed up to three days a week; Leipzig warehouse staff work on site.",
        "",
        "2. Holidays",
        "Full-time employees get 28 days of paid holiday per year, plus public holidays",
        "of the office they are attached to. Up to 5 unused days carry over to 31 March.",
        "",
        "3. Expenses",
        "Travel must be booked through the travel desk. Rail is preferred for trips under",
        "6 hours. Meals are reimbursed up to 45 EUR per day with receipts.",
    ],
    [
        "4. Equipment",
        "Every employee receives a laptop and may order gear from the catalogue with a",
        "40 percent staff discount, up to 600 EUR of retail value per year.",
        "",
        "5. Security",
        "Use the password manager for every company account. Report lost devices to",
        "it-help@northwind.example within 24 hours.",
        "",
        "6. Contacts",
        "People team: people@northwind.example  |  Payroll questions: Henrik Olsen",
    ],
]

_PRICING_V1 = '''"""Quote prices for wholesale orders."""


def quote(unit_price, units):
    return round(unit_price * units, 2)
'''

_PRICING_V2 = '''"""Quote prices for wholesale orders."""

VOLUME_DISCOUNTS = [(500, 0.18), (200, 0.12), (50, 0.06)]


def quote(unit_price: float, units: int) -> float:
    discount = next((rate for threshold, rate in VOLUME_DISCOUNTS if units >= threshold), 0.0)
    return round(unit_price * units * (1 - discount), 2)
'''

REPO_COMMITS = [
    {
        "message": "Add pricing script and README",
        "date": "2026-01-05T09:12:00+01:00",
        "files": {
            "README.md": "# quote-tool\n\nPrice quotes for Northwind wholesale orders.\n",
            "pricing.py": _PRICING_V1,
        },
    },
    {
        "message": "Add volume discounts",
        "date": "2026-01-19T14:40:00+01:00",
        "files": {"pricing.py": _PRICING_V2},
    },
    {
        "message": "Document discount tiers and add tests",
        "date": "2026-02-02T11:05:00+01:00",
        "files": {
            "README.md": "# quote-tool\n\nPrice quotes for Northwind wholesale orders.\n\n"
            "Discounts: 6% from 50 units, 12% from 200, 18% from 500.\n",
            "tests/test_pricing.py": "from pricing import quote\n\n\n"
            "def test_no_discount():\n    assert quote(10.0, 5) == 50.0\n",
        },
    },
]
