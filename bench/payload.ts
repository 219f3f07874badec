/** One input for every job of every bench run: a typical "create contact" body, about 300 bytes of JSON. */
export const PAYLOAD = {
  email: 'ada.lovelace@example.com',
  name: 'Ada Lovelace',
  company: 'Analytical Engines Ltd',
  phone: '+44 20 7946 0000',
  amount: 4200,
  currency: 'EUR',
  tags: ['vip', 'newsletter', 'eu'],
  address: { street: '12 St James Square', city: 'London', postcode: 'SW1Y 4JH', country: 'GB' },
  consent: { marketing: true, at: '2025-01-01T00:00:00Z' },
};
