@realtime
Feature: What a dashboard shows is the run log, whatever the run went through
  A team's dashboard is only useful if it tells the truth about the bad days
  too: an order the service refused, a database that dropped its connections or
  crashed in the middle of a step, a follow-up an operator held and let go. In
  each case a viewer watching from before the run started ends up with exactly
  the run log, every event once, in order, and nothing that was rolled back.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |
    And "Priya" opens the live log of "acme"

  Scenario: A viewer sees an order the service refused fail, exactly as the run log holds it
    Given the order service answers every order with 402
    When "acme" delivers an order webhook to "order-sync"
    Then the run fails because "402"
    And "Priya" saw every event of the run as it happened

  @db-faults
  Scenario: A viewer sees the run whole though the database drops the engine's connections while the answer is being recorded
    Given the worker will stall while the response of "push" is being recorded
    When "acme" delivers an order webhook to "order-sync"
    And the database drops the engine's connections
    Then the run succeeds
    And "Priya" saw every event of the run as it happened

  @db-faults
  Scenario: A viewer sees the run whole though the database cannot be reached for a second before the order is sent
    Given the worker will stall before the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And the database is unreachable for 1 second
    Then the run succeeds
    And "Priya" saw every event of the run as it happened
    And the order service received the order exactly once

  Scenario: Two viewers watch the same follow-up held and let go by an operator, and both see it as its run log holds it
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And "Tomás Ruiz" opens the live log of "acme"
    And a run of "order-follow-up" that is paused in "wait"
    When "dana@acme.example" unpauses the run because "the review found nothing wrong"
    And the clock moves forward 1 hour
    Then the run succeeds
    And "Priya" sees the run exactly as its run log holds it
    And "Tomás Ruiz" sees the run exactly as its run log holds it
